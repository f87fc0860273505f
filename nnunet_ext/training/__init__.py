"""nnUNetTrainer subclasses that hold the logic; `trainers/` exposes named, thin variants of them.

Import the modules themselves (`nnunet_ext.training.ext_trainer`, ...): the package imports nothing, so that the
light ones (settings_file, cpu_threads, clot_sampling) do not pull in nnU-Net's trainer and torch.
"""
