"""Per-epoch diagnostics of the clot networks' cross-attention, for the training log.

A collapsing attention shows before the Dice does: the softmax concentrates on a few keys (its entropy falls
towards 0 of its maximum) and the residual gain alpha grows to compensate. Once per epoch the trainer measures,
on the epoch's first validation batch, the mean normalised entropy of the attention (recomputing the weights that
the fused attention kernel never materialises) and reads alpha and beta, so that the log shows them beside
nnU-Net's pseudo Dice. Measured outside the training graph (no hooks), so compiled and DDP-wrapped networks are
left as they are.
"""
from typing import Optional, Tuple

import torch
from torch import nn

from nnunet_ext.networks.attention_blocks import CrossAttention, normalised_entropy


def unwrapped(network: nn.Module) -> nn.Module:
    """The network under DDP's `.module` and torch.compile's `._orig_mod`."""
    network = getattr(network, "module", network)
    return getattr(network, "_orig_mod", network)


def cross_attention_of(network: nn.Module) -> Optional[CrossAttention]:
    """The attention of a clot network's front end (AttCLSTM, AttLLSTM, UpAttLLSTM); None for the others."""
    front_end = getattr(unwrapped(network), "front_end", None)
    attention = getattr(front_end, "attention", None)
    return attention if isinstance(attention, CrossAttention) else None


def gain_values(attention: CrossAttention) -> Tuple[float, float]:
    """(alpha, beta) as numbers (the mean over channels for per-channel gains)."""
    return float(attention.attention_gain.detach().float().mean()), float(attention.mlp_gain.detach().float().mean())


def mean_attention_entropy(network: nn.Module, data: torch.Tensor) -> Optional[float]:
    """Mean normalised entropy of the attention rows over every slice of `data` [B, C, *patch]; None without
    attention."""
    attention = cross_attention_of(network)
    if attention is None:
        return None
    model = unwrapped(network)
    with torch.no_grad():
        dwi, susceptibility = model.slice_inputs(data)
        return float(normalised_entropy(attention.attention_weights(dwi, susceptibility).float()).mean())


def attention_summary(network: nn.Module, data: torch.Tensor) -> str:
    """'attention: alpha 1.020, beta 0.970, entropy 0.850 of max'; empty for networks without attention."""
    attention = cross_attention_of(network)
    if attention is None:
        return ""
    alpha, beta = gain_values(attention)
    return f"attention: alpha {alpha:.3f}, beta {beta:.3f}, entropy {mean_attention_entropy(network, data):.3f} of max"
