"""nnUNetTrainer subclasses that hold the logic; `trainers/` exposes named, thin variants of them."""
from nnunet_ext.training.ext_trainer import nnUNetTrainerExt
from nnunet_ext.training.modality_dropout_trainer import nnUNetTrainerModalityDropout
from nnunet_ext.training.variants import parse_trainer_name, trainer_variant

__all__ = ["nnUNetTrainerExt", "nnUNetTrainerModalityDropout", "parse_trainer_name", "trainer_variant"]
