"""Overlap metrics on label arrays.

Empty-mask convention (used everywhere in nnunet-ext): if both the reference and the prediction are empty,
Dice is 1.0 (nothing to find, nothing found); if exactly one is empty, Dice is 0.0.
"""
import numpy as np


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two binary masks (any nonzero value is foreground)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    prediction = prediction.astype(bool)
    reference = reference.astype(bool)
    total = int(prediction.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(prediction, reference).sum()) / total
