"""Losses that nnU-Net does not ship: feature similarity for ModDrop++ co-training."""
from nnunet_ext.losses.similarity import feature_dissimilarity, ssim

__all__ = ["feature_dissimilarity", "ssim"]
