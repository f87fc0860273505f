"""Modality dropout math: the gradual schedule f(t), per-sample drop draws and their application.

Pure functions only; the trainers in `trainers/` decide *when* to call them. Import the modules themselves
(`schedule`, `modality_dropout`, `config`): the package imports nothing, so that reading a dataset's channel names
(`config`) does not import torch.
"""
