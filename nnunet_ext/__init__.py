"""nnunet-ext: an nnU-Net v2 extension for multi-center stroke MRI with missing modalities."""

__version__ = "0.1.0"
