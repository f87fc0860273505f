"""Evaluation: overlap metrics on arrays and folder-level evaluation of nnU-Net predictions."""
from nnunet_ext.evaluation.metrics import dice

__all__ = ["dice"]
