"""The clot networks of the thrombus paper and their ablations (Table 6), composed from our blocks:

    CLSTM       5x5 conv front end  -> ConvLSTM   (double pass) -> 1x1 head
    LLSTM       5x5 conv front end  -> Logic LSTM (double pass) -> 1x1 head
    AttCLSTM    cross-attention, upsampled      -> ConvLSTM   -> 1x1 head
    AttLLSTM    cross-attention, upsampled      -> Logic LSTM -> 1x1 head
    UpAttLLSTM  cross-attention + Up block      -> Logic LSTM -> 1x1 head   (the paper's model)

Every model is 2.5D: the front end / attention / Up block run per slice (2D), the recurrence runs over the
slices. nnU-Net builds them from plans (`architecture.network_class_name` = the dotted path of a class here,
sizes in `arch_kwargs`) as cls(input_channels=, num_classes=, deep_supervision=, **arch_kwargs) and its
sliding window feeds 3D patches [B, C, d0, d1, d2]; `slice_axis` (default 0: nnU-Net puts the coarsest axis
first) is the recurrence axis. Which input channel is DWI, SWAN and PHASE is given by index
(`dwi_channel`, `swan_channel`, `phase_channel`; plans/upattllstm_plans.py resolves them from dataset.json
names). Defaults are our reading of Table 4 (docs/methods.md §6): P_D=32, P_S=4, D=32, n_C=4, n_s=8, k=3,
n_L=32; n_up=32.

Not stated in the paper, chosen here (docs/methods.md §3, §6): without the Up block (AttCLSTM, AttLLSTM) the attention
output is brought back to full resolution and the recurrence runs there, so the ablation differs from
UpAttLLSTM by the Up block only, and the Logic LSTM's windows up to 2^8 = 256 span the slice as the paper says.
The paper leaves open how; `attention_upsampling` says it: 'learned' (the templates' choice) maps every token to
its P_S x P_S pixels (TokenUnpatchify, a transposed convolution), 'nearest' / 'linear' resize (the default, as
plans made before it were trained: nearest repeats one value per P_S x P_S block, which caps the Dice of a clot
2 pixels wide at ~0.45 on average with P_S = 4). The Up block's difference is then its full-resolution
susceptibility path, not the resolution itself. The ConvLSTM ablations use n_h = n_C + n_L hidden channels, the
Logic LSTM's state size.
"""
from dataclasses import dataclass
from typing import Dict, Literal, Optional, Sequence, Tuple, Type, Union

import torch
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU
from torch import nn

from nnunet_ext.networks.attention_blocks import (UPSAMPLE_MODES, CrossAttention, TokenUnpatchify, UpBlock,
                                                  upsample_to)
from nnunet_ext.networks.ops.fast_paths import pointwise_conv
from nnunet_ext.networks.recurrent_blocks import ConvLSTMCell, DoublePassRecurrence, LogicLSTMCell

SecondPass = Literal["forward", "reverse"]
# the attention models without the Up block: back to full resolution by TokenUnpatchify (see the module docstring)
LEARNED_UPSAMPLING = "learned"


@dataclass(frozen=True)
class ChannelRoles:
    """Input channel indices of the three modalities the networks read; other channels are ignored."""

    dwi: int
    swan: int
    phase: int

    def validate(self, input_channels: int) -> None:
        roles = {"dwi_channel": self.dwi, "swan_channel": self.swan, "phase_channel": self.phase}
        for name, index in roles.items():
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < input_channels:
                raise ValueError(f"{name} = {index!r} is not a channel index of an input with {input_channels} "
                                 f"channels (0..{input_channels - 1})")
        if len(set(roles.values())) != 3:
            raise ValueError(f"DWI, SWAN and PHASE must be different channels, got {roles}")


class ConvFrontEnd(nn.Module):
    """The non-attention models' start: 'a CNN with 5x5 filters instead of the attention' on [DWI, SWAN, PHASE]."""

    def __init__(self, conv_op: Type[nn.Module], input_channels: int, features: int, kernel_size: int = 5):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"front-end kernel size must be odd (same padding), got {kernel_size}")
        self.conv = ConvDropoutNormReLU(conv_op, input_channels, features, kernel_size, 1, True,
                                        nonlin=nn.ReLU, nonlin_kwargs={"inplace": True})
        self.output_channels = features

    def forward(self, dwi: torch.Tensor, susceptibility: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([dwi, susceptibility], dim=1))


class AttentionFrontEnd(nn.Module):
    """Cross-attention (DWI queries, SWAN/PHASE keys and values), brought back to full resolution by the Up block
    or, without it, by plain upsampling."""

    def __init__(self, attention: CrossAttention, attention_channels: int, up_block: Optional[UpBlock] = None,
                 upsample_mode: str = "nearest", unpatchify: Optional[TokenUnpatchify] = None):
        super().__init__()
        if up_block is not None and unpatchify is not None:
            raise ValueError("the Up block brings the attention back to full resolution: no unpatchify beside it")
        self.attention = attention
        self.up_block = up_block
        self.unpatchify = unpatchify
        self.upsample_mode = upsample_mode
        self.output_channels = up_block.output_channels if up_block is not None else attention_channels

    def forward(self, dwi: torch.Tensor, susceptibility: torch.Tensor) -> torch.Tensor:
        features = self.attention(dwi, susceptibility)
        if self.up_block is not None:
            return self.up_block(features, susceptibility)
        if self.unpatchify is not None:
            return self.unpatchify(features, susceptibility.shape[2:])
        return upsample_to(features, susceptibility.shape[2:], self.upsample_mode)


class SegmentationHead(nn.Module):
    """1x1 conv to the class logits. Named `decoder` in the networks, with the `deep_supervision` switch that
    nnU-Net's trainer sets (`set_deep_supervision_enabled`); there is one resolution, so deep supervision
    returns a one-element list."""

    def __init__(self, conv_op: Type[nn.Module], input_channels: int, num_classes: int, deep_supervision: bool):
        super().__init__()
        self.head = conv_op(input_channels, num_classes, 1)
        self.deep_supervision = deep_supervision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.head.weight, self.head.bias)


class SliceRecurrentSegmenter(nn.Module):
    """Per-slice front end -> recurrence over the slices -> per-slice head, on nnU-Net's 3D patches."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool, roles: ChannelRoles,
                 slice_axis: int, front_end: nn.Module, recurrence: DoublePassRecurrence):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (an axis of the 3D patch), got {slice_axis!r}")
        roles.validate(input_channels)
        self.input_channels = input_channels
        self.roles = roles
        self.slice_axis = slice_axis
        self.front_end = front_end
        self.recurrence = recurrence
        self.decoder = SegmentationHead(nn.Conv2d, recurrence.hidden_channels, num_classes, deep_supervision)

    def slice_inputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """[B, C, d0, d1, d2] -> the per-slice DWI [B * slices, 1, H, W] and SWAN/PHASE [B * slices, 2, H, W]."""
        if x.ndim != 5 or x.shape[1] != self.input_channels:
            raise ValueError(f"expected input [B, {self.input_channels}, d0, d1, d2], got {tuple(x.shape)}")
        x = x.movedim(2 + self.slice_axis, 2)
        batch, channels, slices, height, width = x.shape
        per_slice = x.transpose(1, 2).reshape(batch * slices, channels, height, width)
        return per_slice[:, [self.roles.dwi]], per_slice[:, [self.roles.swan, self.roles.phase]]

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list]:
        dwi, susceptibility = self.slice_inputs(x)
        batch, slices = x.shape[0], x.shape[2 + self.slice_axis]
        features = self.front_end(dwi, susceptibility)
        hidden = self.recurrence(features.view(batch, slices, *features.shape[1:]))
        logits = self.decoder(hidden.flatten(0, 1))
        logits = logits.view(batch, slices, *logits.shape[1:]).transpose(1, 2).movedim(2, 2 + self.slice_axis)
        return [logits] if self.decoder.deep_supervision else logits


def _roles(dwi_channel: int, swan_channel: int, phase_channel: int) -> ChannelRoles:
    return ChannelRoles(dwi=dwi_channel, swan=swan_channel, phase=phase_channel)


def _conv_front_end(features: int, kernel: int) -> ConvFrontEnd:
    return ConvFrontEnd(nn.Conv2d, 3, features, kernel)


def _attention_front_end(slice_shape: Sequence[int], attention_dim: int, dwi_patch: int, susceptibility_patch: int,
                         qkv_hidden: int, mlp_ratio: float, per_channel_gains: bool, upsample_mode: str,
                         up_block: Optional[Dict] = None) -> AttentionFrontEnd:
    """`upsample_mode` 'learned' (models without the Up block only): TokenUnpatchify instead of resizing."""
    if len(slice_shape) != 2:
        raise ValueError(f"slice_shape must be the in-plane patch size [H, W], got {list(slice_shape)}")
    attention = CrossAttention(nn.Conv2d, 1, 2, attention_dim, dwi_patch, susceptibility_patch, slice_shape,
                               qkv_hidden=qkv_hidden, mlp_ratio=mlp_ratio, per_channel_gains=per_channel_gains)
    if up_block is not None:
        if upsample_mode == LEARNED_UPSAMPLING:
            raise ValueError(f"upsample_mode {LEARNED_UPSAMPLING!r} is for the models without the Up block; the Up "
                             f"block resizes with one of {', '.join(UPSAMPLE_MODES)}")
        up = UpBlock(nn.Conv2d, attention_dim, 2, upsample_mode=upsample_mode, **up_block)
        return AttentionFrontEnd(attention, attention_dim, up, upsample_mode)
    if upsample_mode == LEARNED_UPSAMPLING:
        unpatchify = TokenUnpatchify(nn.ConvTranspose2d, attention_dim, susceptibility_patch)
        return AttentionFrontEnd(attention, attention_dim, None, upsample_mode, unpatchify)
    if upsample_mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsampling mode {upsample_mode!r}; expected one of "
                         f"{', '.join(UPSAMPLE_MODES + (LEARNED_UPSAMPLING,))}")
    return AttentionFrontEnd(attention, attention_dim, None, upsample_mode)


def _logic_recurrence(input_channels: int, conv_channels: int, logic_channels: int, pool_scales: int,
                      kernel_size: int, conv_part_sees_logic_state: bool, second_pass: str) -> DoublePassRecurrence:
    cell = LogicLSTMCell(nn.Conv2d, input_channels, conv_channels, logic_channels, pool_scales, kernel_size,
                         conv_part_sees_logic_state)
    return DoublePassRecurrence(cell, second_pass)


def _conv_recurrence(input_channels: int, hidden_channels: int, kernel_size: int,
                     second_pass: str) -> DoublePassRecurrence:
    return DoublePassRecurrence(ConvLSTMCell(nn.Conv2d, input_channels, hidden_channels, kernel_size), second_pass)


class CLSTM(SliceRecurrentSegmenter):
    """5x5 conv front end + ConvLSTM (Table 6 'CLSTM')."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 dwi_channel: int, swan_channel: int, phase_channel: int, front_features: int = 32,
                 front_kernel: int = 5, hidden_channels: int = 36, kernel_size: int = 3,
                 second_pass: SecondPass = "forward", slice_axis: int = 0):
        front_end = _conv_front_end(front_features, front_kernel)
        recurrence = _conv_recurrence(front_end.output_channels, hidden_channels, kernel_size, second_pass)
        super().__init__(input_channels, num_classes, deep_supervision,
                         _roles(dwi_channel, swan_channel, phase_channel), slice_axis, front_end, recurrence)


class LLSTM(SliceRecurrentSegmenter):
    """5x5 conv front end + Logic LSTM (Table 6 'LLSTM')."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 dwi_channel: int, swan_channel: int, phase_channel: int, front_features: int = 32,
                 front_kernel: int = 5, conv_channels: int = 4, logic_channels: int = 32, pool_scales: int = 8,
                 kernel_size: int = 3, conv_part_sees_logic_state: bool = True, second_pass: SecondPass = "forward",
                 slice_axis: int = 0):
        front_end = _conv_front_end(front_features, front_kernel)
        recurrence = _logic_recurrence(front_end.output_channels, conv_channels, logic_channels, pool_scales,
                                       kernel_size, conv_part_sees_logic_state, second_pass)
        super().__init__(input_channels, num_classes, deep_supervision,
                         _roles(dwi_channel, swan_channel, phase_channel), slice_axis, front_end, recurrence)


class AttCLSTM(SliceRecurrentSegmenter):
    """Cross-attention (upsampled) + ConvLSTM (Table 6 'AttCLSTM')."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 dwi_channel: int, swan_channel: int, phase_channel: int, slice_shape: Sequence[int],
                 attention_dim: int = 32, dwi_patch: int = 32, susceptibility_patch: int = 4, qkv_hidden: int = 0,
                 mlp_ratio: float = 4.0, per_channel_gains: bool = False, upsample_mode: str = "nearest",
                 attention_upsampling: Optional[str] = None,
                 hidden_channels: int = 36, kernel_size: int = 3, second_pass: SecondPass = "forward",
                 slice_axis: int = 0):
        front_end = _attention_front_end(slice_shape, attention_dim, dwi_patch, susceptibility_patch, qkv_hidden,
                                         mlp_ratio, per_channel_gains,
                                         attention_upsampling or upsample_mode)
        recurrence = _conv_recurrence(front_end.output_channels, hidden_channels, kernel_size, second_pass)
        super().__init__(input_channels, num_classes, deep_supervision,
                         _roles(dwi_channel, swan_channel, phase_channel), slice_axis, front_end, recurrence)


class AttLLSTM(SliceRecurrentSegmenter):
    """Cross-attention (upsampled) + Logic LSTM (Table 6 'AttLLSTM', MIDL 2024)."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 dwi_channel: int, swan_channel: int, phase_channel: int, slice_shape: Sequence[int],
                 attention_dim: int = 32, dwi_patch: int = 32, susceptibility_patch: int = 4, qkv_hidden: int = 0,
                 mlp_ratio: float = 4.0, per_channel_gains: bool = False, upsample_mode: str = "nearest",
                 attention_upsampling: Optional[str] = None,
                 conv_channels: int = 4, logic_channels: int = 32, pool_scales: int = 8, kernel_size: int = 3,
                 conv_part_sees_logic_state: bool = True, second_pass: SecondPass = "forward", slice_axis: int = 0):
        front_end = _attention_front_end(slice_shape, attention_dim, dwi_patch, susceptibility_patch, qkv_hidden,
                                         mlp_ratio, per_channel_gains,
                                         attention_upsampling or upsample_mode)
        recurrence = _logic_recurrence(front_end.output_channels, conv_channels, logic_channels, pool_scales,
                                       kernel_size, conv_part_sees_logic_state, second_pass)
        super().__init__(input_channels, num_classes, deep_supervision,
                         _roles(dwi_channel, swan_channel, phase_channel), slice_axis, front_end, recurrence)


class UpAttLLSTM(SliceRecurrentSegmenter):
    """Cross-attention + Up block + Logic LSTM: the paper's model (section 4.2)."""

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool = False, *,
                 dwi_channel: int, swan_channel: int, phase_channel: int, slice_shape: Sequence[int],
                 attention_dim: int = 32, dwi_patch: int = 32, susceptibility_patch: int = 4, qkv_hidden: int = 0,
                 mlp_ratio: float = 4.0, per_channel_gains: bool = False, upsample_mode: str = "nearest",
                 up_features: int = 32, skip_features: int = 12, norm_op: Optional[Type[nn.Module]] = nn.BatchNorm2d,
                 norm_op_kwargs: Optional[dict] = None, conv_channels: int = 4, logic_channels: int = 32,
                 pool_scales: int = 8, kernel_size: int = 3, conv_part_sees_logic_state: bool = True,
                 second_pass: SecondPass = "forward", slice_axis: int = 0, up_skip_dropout: float = 0.0):
        up_block = {"output_channels": up_features, "skip_features": skip_features, "norm_op": norm_op,
                    "norm_op_kwargs": norm_op_kwargs, "skip_dropout": up_skip_dropout}
        front_end = _attention_front_end(slice_shape, attention_dim, dwi_patch, susceptibility_patch, qkv_hidden,
                                         mlp_ratio, per_channel_gains, upsample_mode, up_block)
        recurrence = _logic_recurrence(front_end.output_channels, conv_channels, logic_channels, pool_scales,
                                       kernel_size, conv_part_sees_logic_state, second_pass)
        super().__init__(input_channels, num_classes, deep_supervision,
                         _roles(dwi_channel, swan_channel, phase_channel), slice_axis, front_end, recurrence)


CLOT_MODELS: Dict[str, Type[SliceRecurrentSegmenter]] = {
    "CLSTM": CLSTM, "LLSTM": LLSTM, "AttCLSTM": AttCLSTM, "AttLLSTM": AttLLSTM, "UpAttLLSTM": UpAttLLSTM}
ATTENTION_MODELS: Tuple[str, ...] = ("AttCLSTM", "AttLLSTM", "UpAttLLSTM")


def model_class_path(model: str) -> str:
    """The dotted path nnU-Net's plans name the model by (architecture.network_class_name)."""
    if model not in CLOT_MODELS:
        raise ValueError(f"unknown clot model {model!r}; expected one of {', '.join(CLOT_MODELS)}")
    return f"{__name__}.{model}"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
