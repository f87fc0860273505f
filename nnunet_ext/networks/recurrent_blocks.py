"""Recurrent building blocks of the clot networks: ConvLSTM and Logic LSTM cells, the Logic LSTM's
multi-window max-pool transfer layer, and the double pass over the slices (methods.md 3.3).

Blocks take `conv_op` like dynamic-network-architectures' blocks, so the same cell runs on 2D slices (the
paper's use: slices are the time axis) or on 3D sub-volumes. A cell maps (x_t, (h, c)) to the next (h, c);
the runners below decide the order in which slices are fed.
"""
from typing import List, Literal, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

LSTMState = Tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, hidden, *spatial]
SECOND_PASS_ORDERS = ("forward", "reverse")


def _clipped_window(window: int, length: int) -> Tuple[int, int, bool]:
    """(window, samples before the centre, covers everything) for a TF-'same' window on an axis of `length`.

    Window parts that lie beyond the axis for every output sample change nothing and are cut, so that the
    coarse scales (windows up to 256 on a slice of 256 pixels or fewer) pad by less than a whole window."""
    before = (window - 1) // 2
    cut_before = max(0, before - (length - 1))
    cut_after = max(0, window - before - length)
    return window - cut_before - cut_after, before - cut_before, bool(cut_before and cut_after)


def _pad_axis(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    pad = [0, 0] * (x.ndim - 1 - dim) + [before, after]
    return F.pad(x, pad, value=float("-inf"))


def _double(x: torch.Tensor, dim: int, shift: int) -> torch.Tensor:
    """max(x[i], x[i + shift]) along dim (the result is `shift` samples shorter)."""
    length = x.shape[dim] - shift
    return torch.maximum(x.narrow(dim, 0, length), x.narrow(dim, shift, length))


def sliding_max_same(x: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Max over `window` samples along `dim`, stride 1, output as long as the input.

    "Same" placement as TF/Keras for even windows (pad_before = (s-1)//2, pad_after = s-1-pad_before), with -inf
    padding, so the border never wins. Computed by doubling (the max over 2w samples is the max of two w-sample
    maxima w apart): O(n log s) instead of O(n s); the largest Logic-LSTM window spans a whole slice.
    """
    if window < 1:
        raise ValueError(f"pooling window must be >= 1, got {window}")
    if window == 1:
        return x
    dim = dim % x.ndim
    window, before, everything = _clipped_window(window, x.shape[dim])
    if everything:
        return x.amax(dim=dim, keepdim=True).expand_as(x)
    result = _pad_axis(x, dim, before, window - 1 - before)
    width = 1  # result[i] = max(padded[i : i + width])
    while 2 * width <= window:
        result = _double(result, dim, width)
        width *= 2
    if width < window:  # not a power of two: two overlapping maxima of `width` samples
        result = _double(result, dim, window - width)
    return result


def channel_group_max_pool(x: torch.Tensor, windows: Sequence[int]) -> torch.Tensor:
    """The Logic LSTM's transfer layer T, Eq. (16): cut the channels of x [B, C, *spatial] into len(windows)
    consecutive groups of equal size and max-pool group j over every spatial axis with window windows[j],
    stride 1, same output size (separably: the max over a box is the max of maxima along each axis)."""
    groups = len(windows)
    if groups == 0 or x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels cannot be cut into {groups} equal groups for windows {list(windows)}")
    pooled = []
    for group, window in zip(torch.chunk(x, groups, dim=1), windows):
        for dim in range(2, x.ndim):
            group = sliding_max_same(group, int(window), dim)
        pooled.append(group)
    return torch.cat(pooled, dim=1)


def logic_pool_windows(pool_scales: int) -> List[int]:
    """Windows 2, 4, ..., 2^n_s: from local to global (n_s = 8 covers a 256-pixel slice)."""
    if pool_scales < 1:
        raise ValueError(f"pool_scales (n_s) must be >= 1, got {pool_scales}")
    return [2 ** j for j in range(1, pool_scales + 1)]


class MultiWindowMaxPool(nn.Module):
    """Module form of `channel_group_max_pool` (no parameters)."""

    def __init__(self, windows: Sequence[int]):
        super().__init__()
        if not windows or any(int(w) < 1 for w in windows):
            raise ValueError(f"windows must be a non-empty list of positive sizes, got {list(windows)}")
        self.windows = [int(w) for w in windows]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_group_max_pool(x, self.windows)

    def extra_repr(self) -> str:
        return f"windows={self.windows}"


def _lstm_update(gates: Tuple[torch.Tensor, ...], cell_state: torch.Tensor) -> LSTMState:
    """Standard LSTM state update from gate pre-activations (i, f, o, g); no peepholes (methods.md 3.3)."""
    i, f, o, g = gates
    c = torch.sigmoid(f) * cell_state + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class ConvLSTMCell(nn.Module):
    """ConvLSTM (Shi et al. 2015): [i, f, o, g] = W * [x_t; h_{t-1}] + b with one k x k convolution."""

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, hidden_channels: int, kernel_size: int = 3,
                 bias: bool = True):
        super().__init__()
        if input_channels < 1 or hidden_channels < 1:
            raise ValueError(f"need input_channels >= 1 and hidden_channels >= 1, got {input_channels}, "
                             f"{hidden_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.hidden_channels = hidden_channels
        self.gates = conv_op(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                             padding=kernel_size // 2, bias=bias)

    def initial_state(self, x: torch.Tensor) -> LSTMState:
        zeros = x.new_zeros((x.shape[0], self.hidden_channels, *x.shape[2:]))
        return zeros, zeros

    def forward(self, x: torch.Tensor, state: LSTMState) -> LSTMState:
        h, c = state
        gates = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        return _lstm_update(gates, c)


class LogicLSTMCell(nn.Module):
    """Logic LSTM cell (Eq. 13-16): the state is split into n_C conv channels and n_L logic channels.

    Every gate is [C; L]: C = k x k conv (n_C outputs), L = T(1 x 1 conv) (n_L outputs), T the multi-window max
    pool. Only the conv part pays k^2 weights per input channel, which is where the parameter saving comes
    from; T gives the gates receptive fields up to the whole slice.

    `conv_part_sees_logic_state` chooses the reading of Eq. (14) (methods.md 3.3): True (reading B, default) feeds
    [x_t; h] to the k x k conv, so the pooled logic state acts on it like a spatially smooth bias; False
    (reading A) feeds it [x_t; h^C] only. The 1 x 1 logic conv sees [x_t; h] in both readings.
    """

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, conv_channels: int, logic_channels: int,
                 pool_scales: int, kernel_size: int = 3, conv_part_sees_logic_state: bool = True, bias: bool = True):
        super().__init__()
        if input_channels < 1 or conv_channels < 1 or logic_channels < 1:
            raise ValueError(f"need input_channels, conv_channels (n_C) and logic_channels (n_L) >= 1, got "
                             f"{input_channels}, {conv_channels}, {logic_channels}")
        windows = logic_pool_windows(pool_scales)
        if logic_channels % pool_scales:
            raise ValueError(f"logic_channels (n_L = {logic_channels}) must be a multiple of pool_scales "
                             f"(n_s = {pool_scales}): n_L = m * n_s")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.conv_channels = conv_channels
        self.logic_channels = logic_channels
        self.hidden_channels = conv_channels + logic_channels
        self.conv_part_sees_logic_state = conv_part_sees_logic_state
        conv_inputs = input_channels + (self.hidden_channels if conv_part_sees_logic_state else conv_channels)
        self.conv_part = conv_op(conv_inputs, 4 * conv_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.logic_part = conv_op(input_channels + self.hidden_channels, 4 * logic_channels, 1, bias=bias)
        self.transfer = MultiWindowMaxPool(windows)

    def initial_state(self, x: torch.Tensor) -> LSTMState:
        zeros = x.new_zeros((x.shape[0], self.hidden_channels, *x.shape[2:]))
        return zeros, zeros

    def forward(self, x: torch.Tensor, state: LSTMState) -> LSTMState:
        h, c = state
        batch, spatial = x.shape[0], x.shape[2:]
        xh = torch.cat([x, h], dim=1)
        conv_input = xh if self.conv_part_sees_logic_state else torch.cat([x, h[:, :self.conv_channels]], dim=1)
        conv = self.conv_part(conv_input).view(batch, 4, self.conv_channels, *spatial)
        # T acts on each gate's n_L block separately: fold the gates into the batch axis
        logic = self.logic_part(xh).reshape(batch * 4, self.logic_channels, *spatial)
        logic = self.transfer(logic).view(batch, 4, self.logic_channels, *spatial)
        gates = torch.cat([conv, logic], dim=2).unbind(dim=1)  # each gate: [C_gamma; L_gamma], n_h channels
        return _lstm_update(gates, c)


def run_recurrence(cell: nn.Module, inputs: torch.Tensor, state: LSTMState, order: Sequence[int]
                   ) -> Tuple[List[torch.Tensor], LSTMState]:
    """Feed inputs[:, t] for t in `order` through `cell` from `state`; returns h per step (indexed by t; None
    for steps not visited) and the final state."""
    outputs: List[torch.Tensor] = [None] * inputs.shape[1]
    for t in order:
        state = cell(inputs[:, t], state)
        outputs[t] = state[0]
    return outputs, state


def double_pass(cell: nn.Module, inputs: torch.Tensor, second_pass: str = "forward") -> torch.Tensor:
    """The double pass of methods.md 3.3 over inputs [B, S, C, *spatial]; returns h [B, S, hidden, *spatial].

    Pass 1 runs t = 1..S from zero states and only keeps its final state; pass 2 runs again with the same
    weights from that state ('forward': t = 1..S; 'reverse': t = S..1) and its h_t are the outputs. The first
    slices therefore see the whole stack, as a bidirectional recurrence would, without extra parameters.
    Gradients flow through both passes.
    """
    if second_pass not in SECOND_PASS_ORDERS:
        raise ValueError(f"unknown second pass order {second_pass!r}; expected one of {', '.join(SECOND_PASS_ORDERS)}")
    if inputs.ndim < 4 or inputs.shape[1] < 1:
        raise ValueError(f"expected inputs [B, S, C, *spatial] with S >= 1, got shape {tuple(inputs.shape)}")
    steps = range(inputs.shape[1])
    _, memory = run_recurrence(cell, inputs, cell.initial_state(inputs[:, 0]), steps)
    outputs, _ = run_recurrence(cell, inputs, memory, steps if second_pass == "forward" else reversed(steps))
    return torch.stack(outputs, dim=1)


class DoublePassRecurrence(nn.Module):
    """A cell run as `double_pass` over the slice axis of [B, S, C, *spatial]."""

    def __init__(self, cell: nn.Module, second_pass: Literal["forward", "reverse"] = "forward"):
        super().__init__()
        if second_pass not in SECOND_PASS_ORDERS:
            raise ValueError(f"unknown second pass order {second_pass!r}; expected one of "
                             f"{', '.join(SECOND_PASS_ORDERS)}")
        self.cell = cell
        self.second_pass = second_pass
        self.hidden_channels = cell.hidden_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return double_pass(self.cell, inputs, self.second_pass)

    def extra_repr(self) -> str:
        return f"second_pass={self.second_pass!r}"
