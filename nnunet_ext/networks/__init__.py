"""Network building blocks and wrappers (dynamic first convolution of ModDrop+, ...)."""
from nnunet_ext.networks.dynamic_head import (DynamicFirstConv, find_dynamic_head, modality_code_from_input,
                                              using_modality_code, wrap_first_convolution)

__all__ = ["DynamicFirstConv", "find_dynamic_head", "modality_code_from_input", "using_modality_code",
           "wrap_first_convolution"]
