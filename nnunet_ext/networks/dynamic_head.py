"""ModDrop+'s dynamic first convolution (Liu et al., MICCAI 2022; docs/methods.md §2, §6).

A controller maps the per-sample modality code mc in {0, 1}^M (1 = present) to one scale per
(output channel, input channel) pair and one per output bias: s = A mc + a. The sample's kernel is
W_n[o, i] = s_n[o, i] * W[o, i] and its bias b_n[o] = s_n[C_out C_in + o] * b[o]; the whole batch runs as one
grouped convolution. The controller starts at A = 0, a = 1 (identity scales), so a freshly wrapped network
computes what the unwrapped one did; the public code's N(0, 0.02) start would switch nnU-Net's He-initialised
first layer almost off (a deviation, docs/methods.md §6).

Where the code comes from: a trainer states it for the forward passes it runs (`using_modality_code`: its
dropout draw AND the channels present in the data, `training_modality_code`); otherwise -- validation, the
stock predictor and its sliding window -- it is derived from the input: a channel that is exactly zero over
the whole patch is absent. An all-background patch is zero in every channel after nnU-Net's masked
normalisation, so its code is all zeros and its kernel is scaled by the controller's bias alone (a = 1 at the start); such a patch carries no image content either way.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

ConvNd = Union[nn.Conv2d, nn.Conv3d]


def modality_code_from_input(x: torch.Tensor) -> torch.Tensor:
    """[batch, channels] float code: 1 where a sample's channel has any nonzero voxel, else 0."""
    return (x.detach().flatten(2).abs().amax(dim=2) > 0).to(x.dtype)


def training_modality_code(kept: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Code of a training batch: 1 where the dropout draw kept the channel AND the data has it.

    The draw alone would call a channel present that is zero in the data itself (a center without B0), while
    validation and inference, which read the code off the input, call it absent; the product makes training
    see the code inference will. `kept`: bool or float [batch, channels]; `x`: the batch [batch, channels, ...]
    (on the device it will run on, so that reading the code costs no copy)."""
    if tuple(kept.shape) != tuple(x.shape[:2]):
        raise ValueError(f"a draw for [batch, channels] = {tuple(kept.shape)} does not match data of shape "
                         f"{tuple(x.shape)}")
    return kept.to(device=x.device, dtype=x.dtype) * modality_code_from_input(x)


class DynamicFirstConv(nn.Module):
    """Wraps a Conv2d/Conv3d (its weights stay the trainable base kernel) with a modality-code controller."""

    def __init__(self, conv: ConvNd):
        super().__init__()
        if not isinstance(conv, (nn.Conv2d, nn.Conv3d)):
            raise TypeError(f"expected a Conv2d or Conv3d, got {type(conv).__name__}")
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"only ungrouped, zero-padded convolutions can be wrapped (groups={conv.groups}, "
                             f"padding_mode={conv.padding_mode!r})")
        self.conv = conv
        self.num_modalities = conv.in_channels
        scales = conv.out_channels * conv.in_channels + (conv.out_channels if conv.bias is not None else 0)
        self.controller = nn.Linear(self.num_modalities, scales)
        nn.init.zeros_(self.controller.weight)
        nn.init.ones_(self.controller.bias)
        self._stated_code: Optional[torch.Tensor] = None
        self.capture_output = False
        self.last_output: Optional[torch.Tensor] = None

    # the attributes nnU-Net / dynamic-network-architectures read from a first convolution
    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def scales(self, code: torch.Tensor):
        """Per-sample weight scales [N, C_out, C_in] and bias scales [N, C_out] (None without bias)."""
        raw = self.controller(code)
        n, out_c, in_c = code.shape[0], self.conv.out_channels, self.conv.in_channels
        weight_scales = raw[:, :out_c * in_c].view(n, out_c, in_c)
        bias_scales = raw[:, out_c * in_c:] if self.conv.bias is not None else None
        return weight_scales, bias_scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        code = self._stated_code if self._stated_code is not None else modality_code_from_input(x)
        if code.shape != (n, self.num_modalities):
            raise ValueError(f"modality code of shape {tuple(code.shape)} for a batch of {n} samples with "
                             f"{self.num_modalities} channels")
        weight_scales, bias_scales = self.scales(code.to(device=x.device, dtype=x.dtype))
        kernel_dims = self.conv.weight.dim() - 2
        weight = self.conv.weight.unsqueeze(0) * weight_scales.view(*weight_scales.shape, *[1] * kernel_dims)
        weight = weight.reshape(n * self.conv.out_channels, self.conv.in_channels, *self.conv.kernel_size)
        bias = None if bias_scales is None else (self.conv.bias.unsqueeze(0) * bias_scales).reshape(-1)
        convolve = F.conv3d if kernel_dims == 3 else F.conv2d
        y = convolve(x.reshape(1, n * x.shape[1], *x.shape[2:]), weight, bias, self.conv.stride, self.conv.padding,
                     self.conv.dilation, groups=n)
        y = y.view(n, self.conv.out_channels, *y.shape[2:])
        if self.capture_output:
            self.last_output = y
        return y


def _first_convolution(network: nn.Module, input_channels: int) -> ConvNd:
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            if module.in_channels != input_channels:
                raise ValueError(f"the first convolution found takes {module.in_channels} channels, not the "
                                 f"network's {input_channels} input channels")
            return module
    raise ValueError(f"no Conv2d/Conv3d in {type(network).__name__}")


def wrap_first_convolution(network: nn.Module, input_channels: int) -> DynamicFirstConv:
    """Replace the network's first convolution, wherever it is referenced, by a DynamicFirstConv around it.

    Found by walking the module tree (PlainConvUNet: encoder.stages[0][0].convs[0].conv; ResidualEncoderUNet:
    encoder.stem.convs[0].conv), and replaced in every parent that holds it, e.g. both `.conv` and
    `.all_modules[0]` of dynamic-network-architectures' ConvDropoutNormReLU.
    """
    conv = _first_convolution(network, input_channels)
    dynamic = DynamicFirstConv(conv)
    replaced = 0
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if child is conv and parent is not dynamic:
                setattr(parent, name, dynamic)
                replaced += 1
    if replaced == 0:
        raise ValueError("the first convolution is the network itself; nothing to wrap")
    return dynamic


def _unwrap(network: nn.Module) -> nn.Module:
    while hasattr(network, "module") and isinstance(network.module, nn.Module):  # DDP
        network = network.module
    return getattr(network, "_orig_mod", network)  # torch.compile


def find_dynamic_head(network: nn.Module) -> DynamicFirstConv:
    heads: List[DynamicFirstConv] = [m for m in _unwrap(network).modules() if isinstance(m, DynamicFirstConv)]
    if len(heads) != 1:
        raise ValueError(f"expected one DynamicFirstConv in the network, found {len(heads)}")
    return heads[0]


@contextmanager
def using_modality_code(network: nn.Module, code: torch.Tensor) -> Iterator[DynamicFirstConv]:
    """State the modality code of the next forward passes (the trainer knows what it dropped)."""
    head = find_dynamic_head(network)
    head._stated_code = code
    try:
        yield head
    finally:
        head._stated_code = None


@contextmanager
def capturing_head_output(network: nn.Module) -> Iterator[DynamicFirstConv]:
    """Keep the dynamic head's output of the last forward pass in `head.last_output` (co-training)."""
    head = find_dynamic_head(network)
    head.capture_output = True
    try:
        yield head
    finally:
        head.capture_output = False
        head.last_output = None
