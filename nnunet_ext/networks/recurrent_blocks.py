"""Recurrent building blocks of the clot networks: ConvLSTM and Logic LSTM cells, the Logic LSTM's
multi-window max-pool transfer layer, and the double pass over the slices (methods.md 3.3).

Blocks take `conv_op` like dynamic-network-architectures' blocks, so the same cell runs on 2D slices (the
paper's use: slices are the time axis) or on 3D sub-volumes. A cell maps (x_t, (h, c)) to the next (h, c);
the runners below decide the order in which slices are fed.
"""
from typing import List, Literal, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.conv import _ConvNd

LSTMState = Tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, hidden, *spatial]
SECOND_PASS_ORDERS = ("forward", "reverse")


def _clipped_window(window: int, length: int) -> Tuple[int, int]:
    """(window, samples before the centre) for a TF-'same' window on an axis of `length`.

    Window parts that lie beyond the axis for every output sample change nothing and are cut, so that the
    coarse scales (windows up to 256 on a slice of 256 pixels or fewer) pad by less than a whole window."""
    before = (window - 1) // 2
    cut_before = max(0, before - (length - 1))
    cut_after = max(0, window - before - length)
    return window - cut_before - cut_after, before - cut_before


def _pad_axis(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    if before == 0 and after == 0:
        return x
    pad = [0, 0] * (x.ndim - 1 - dim) + [before, after]
    return F.pad(x, pad, value=float("-inf"))


def _double(x: torch.Tensor, dim: int, shift: int) -> torch.Tensor:
    """max(x[i], x[i + shift]) along dim (the result is `shift` samples shorter)."""
    length = x.shape[dim] - shift
    return torch.maximum(x.narrow(dim, 0, length), x.narrow(dim, shift, length))


def _double_with_index(x: torch.Tensor, index: torch.Tensor, dim: int, shift: int
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """`_double`, carrying where along dim each maximum came from (the earlier sample on ties)."""
    length = x.shape[dim] - shift
    first, second = x.narrow(dim, 0, length), x.narrow(dim, shift, length)
    later = second > first
    return (torch.where(later, second, first),
            torch.where(later, index.narrow(dim, shift, length), index.narrow(dim, 0, length)))


def _sliding_max(x: torch.Tensor, window: int, dim: int, with_index: bool
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(max over the 'same' window along dim, position along dim of each maximum or None); see sliding_max_same."""
    length = x.shape[dim]
    window, before = _clipped_window(window, length)
    if before >= length - 1 and window - 1 - before >= length - 1:  # every output sees the whole axis
        if not with_index:
            return x.amax(dim=dim, keepdim=True).expand_as(x), None
        values, index = x.max(dim=dim, keepdim=True)
        return values.expand_as(x), index.expand_as(x)
    result = _pad_axis(x, dim, before, window - 1 - before)
    index = None
    if with_index:  # position in x of every padded sample (the -inf padding never wins: no index is out of range)
        shape = [1] * x.ndim
        shape[dim] = result.shape[dim]
        index = (torch.arange(result.shape[dim], device=x.device) - before).view(shape).expand_as(result)
    width = 1  # result[i] = max(padded[i : i + width])
    shifts = []
    while 2 * width <= window:
        shifts.append(width)
        width *= 2
    if width < window:  # not a power of two: two overlapping maxima of `width` samples
        shifts.append(window - width)
    for shift in shifts:
        if with_index:
            result, index = _double_with_index(result, index, dim, shift)
        else:
            result = _double(result, dim, shift)
    return result, index


class _SlidingMax(torch.autograd.Function):
    """Sliding max whose backward sends each output's gradient to the one sample that won (as max pooling does):
    autograd through the doubling would run a tie-splitting backward of every torch.maximum, measured 10x the
    forward's cost on 256 x 256 slices."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, window: int, dim: int) -> torch.Tensor:
        values, index = _sliding_max(x, window, dim, with_index=True)
        ctx.save_for_backward(index)
        ctx.dim, ctx.shape = dim, x.shape
        return values.contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, = ctx.saved_tensors
        grad_input = grad.new_zeros(ctx.shape).scatter_add_(ctx.dim, index.contiguous(), grad.contiguous())
        return grad_input, None, None


def sliding_max_same(x: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Max over `window` samples along `dim`, stride 1, output as long as the input.

    "Same" placement as TF/Keras for even windows (pad_before = (s-1)//2, pad_after = s-1-pad_before), with -inf
    padding, so the border never wins. Computed by doubling (the max over 2w samples is the max of two w-sample
    maxima w apart): O(n log s) instead of O(n s); the largest Logic-LSTM window spans a whole slice. With autograd
    the gradient of each output goes to the sample that won (the earlier one on ties), as in max pooling.
    """
    if window < 1:
        raise ValueError(f"pooling window must be >= 1, got {window}")
    if window == 1:
        return x
    dim = dim % x.ndim
    if torch.is_grad_enabled() and x.requires_grad:
        return _SlidingMax.apply(x, window, dim)
    return _sliding_max(x, window, dim, with_index=False)[0]


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


def _lstm_update(gates: torch.Tensor, cell_state: torch.Tensor, gate_dim: int = 1) -> LSTMState:
    """Standard LSTM state update from gate pre-activations in the order (i, f, o, g) along `gate_dim` (e.g.
    [B, 4, n_h, *spatial]); cell_state has the gates' shape without that axis. No peepholes (methods.md 3.3).
    Without autograd (inference) the gates are overwritten in place: each full-size temporary costs a fresh
    allocation per slice, which on CPU costs as much as the arithmetic."""
    def gate(tensor: torch.Tensor, index: int) -> torch.Tensor:
        return tensor.select(gate_dim, index)
    if torch.is_grad_enabled():
        squashed = torch.sigmoid(gates.narrow(gate_dim, 0, 3))
        c = gate(squashed, 1) * cell_state + gate(squashed, 0) * torch.tanh(gate(gates, 3))
        return gate(squashed, 2) * torch.tanh(c), c
    squashed = gates.narrow(gate_dim, 0, 3).sigmoid_()
    candidate = gate(gates, 3).tanh_().mul_(gate(squashed, 0))
    c = torch.addcmul(candidate, gate(squashed, 1), cell_state)
    return gate(squashed, 2).mul_(torch.tanh(c)), c


def _gate_conv(conv: _ConvNd, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """`conv` with another weight and bias (a slice of its own), sent to oneDNN for float32 on CPU: PyTorch's
    dispatcher gives small 1 x 1 convolutions (batch < 16, one thread) its im2col path, measured 2-3x slower here
    for the Logic LSTM's 1 x 1 gates."""
    if x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and torch.backends.mkldnn.is_available() \
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple):
        return torch.mkldnn_convolution(x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv._conv_forward(x, weight, bias)


def _split_conv(weight: torch.Tensor, input_channels: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A gate convolution over [x; h] is W_x * x + W_h * h (convolution is linear in its input channels): the
    input part can then run once over every slice, outside the recurrence, and serve both passes."""
    return weight[:, :input_channels], weight[:, input_channels:]


class RecurrentCell(nn.Module):
    """A cell whose gate pre-activations are W_x * x_t + W_h * h_{t-1} + b.

    `project_inputs` computes W_x * x + b for any number of slices at once (one batched convolution, shared by both
    passes of `double_pass`); `step` adds W_h * h_{t-1} and updates the state. forward(x, state) = one whole step.
    """

    hidden_channels: int

    def initial_state(self, x: torch.Tensor) -> LSTMState:
        zeros = x.new_zeros((x.shape[0], self.hidden_channels, *x.shape[2:]))
        return zeros, zeros

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, projected: torch.Tensor, state: LSTMState) -> LSTMState:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: LSTMState) -> LSTMState:
        return self.step(self.project_inputs(x), state)


class ConvLSTMCell(RecurrentCell):
    """ConvLSTM (Shi et al. 2015): [i, f, o, g] = W * [x_t; h_{t-1}] + b with one k x k convolution."""

    def __init__(self, conv_op: Type[_ConvNd], input_channels: int, hidden_channels: int, kernel_size: int = 3,
                 bias: bool = True):
        super().__init__()
        if input_channels < 1 or hidden_channels < 1:
            raise ValueError(f"need input_channels >= 1 and hidden_channels >= 1, got {input_channels}, "
                             f"{hidden_channels}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.input_channels = input_channels
        self.hidden_channels = hidden_channels
        self.gates = conv_op(input_channels + hidden_channels, 4 * hidden_channels, kernel_size,
                             padding=kernel_size // 2, bias=bias)

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        weight, _ = _split_conv(self.gates.weight, self.input_channels)
        return _gate_conv(self.gates, x, weight, self.gates.bias)

    def step(self, projected: torch.Tensor, state: LSTMState) -> LSTMState:
        h, c = state
        _, recurrent_weight = _split_conv(self.gates.weight, self.input_channels)
        gates = _gate_conv(self.gates, h, recurrent_weight, None).add_(projected)
        return _lstm_update(gates.unflatten(1, (4, self.hidden_channels)), c)


class LogicLSTMCell(RecurrentCell):
    """Logic LSTM cell (Eq. 13-16): the state is split into n_C conv channels and n_L logic channels.

    Every gate is [C; L]: C = k x k conv (n_C outputs), L = T(1 x 1 conv) (n_L outputs), T the multi-window max
    pool. Only the conv part pays k^2 weights per input channel, which is where the parameter saving comes
    from; T gives the gates receptive fields up to the whole slice.

    `conv_part_sees_logic_state` chooses the reading of Eq. (14) (methods.md 3.3): True (reading B, default) feeds
    [x_t; h] to the k x k conv, so the pooled logic state acts on it like a spatially smooth bias; False
    (reading A) feeds it [x_t; h^C] only. The 1 x 1 logic conv sees [x_t; h] in both readings. T pools the
    1 x 1 conv's whole output, W_x * x + W_h * h + b, so only that sum (not its input part) is pooled.
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
        self.input_channels = input_channels
        self.conv_channels = conv_channels
        self.logic_channels = logic_channels
        self.hidden_channels = conv_channels + logic_channels
        self.conv_part_sees_logic_state = conv_part_sees_logic_state
        conv_inputs = input_channels + (self.hidden_channels if conv_part_sees_logic_state else conv_channels)
        self.conv_part = conv_op(conv_inputs, 4 * conv_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.logic_part = conv_op(input_channels + self.hidden_channels, 4 * logic_channels, 1, bias=bias)
        self.transfer = MultiWindowMaxPool(windows)

    def _logic_weights(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The 1 x 1 logic conv's weight and bias with output channels reordered from (gate, group, m) to (group,
        gate, m): each pooling group of T is then one contiguous block of 4 m channels, which T pools without
        gathering strided channels or folding gates into the batch (the parameters keep the layout of Eq. 16)."""
        groups = len(self.transfer.windows)
        per_group = self.logic_channels // groups

        def reorder(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.reshape(4, groups, per_group, *tensor.shape[1:]).transpose(0, 1).reshape(tensor.shape)
        bias = self.logic_part.bias
        return reorder(self.logic_part.weight), None if bias is None else reorder(bias)

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """[W_x^C * x + b^C; W_x^L * x + b^L]: [N, 4 n_C + 4 n_L, *spatial] (logic channels as `_logic_weights`)."""
        conv_weight, _ = _split_conv(self.conv_part.weight, self.input_channels)
        logic_weight, logic_bias = self._logic_weights()
        logic_weight, _ = _split_conv(logic_weight, self.input_channels)
        return torch.cat([_gate_conv(self.conv_part, x, conv_weight, self.conv_part.bias),
                          _gate_conv(self.logic_part, x, logic_weight, logic_bias)], dim=1)

    def step(self, projected: torch.Tensor, state: LSTMState) -> LSTMState:
        h, c = state
        batch, spatial = h.shape[0], h.shape[2:]
        groups = len(self.transfer.windows)
        _, conv_weight = _split_conv(self.conv_part.weight, self.input_channels)
        _, logic_weight = _split_conv(self._logic_weights()[0], self.input_channels)
        conv_state = h if self.conv_part_sees_logic_state else h[:, :self.conv_channels]
        # in place on the fresh convolution outputs (a convolution's backward does not need its output)
        conv = _gate_conv(self.conv_part, conv_state, conv_weight, None).add_(projected[:, :4 * self.conv_channels])
        logic = _gate_conv(self.logic_part, h, logic_weight, None).add_(projected[:, 4 * self.conv_channels:])
        logic = self.transfer(logic)  # channels (group, gate, m): T's groups are consecutive blocks
        # each gate is [C; L]: update the two parts of the state apart (an LSTM update is per channel), which
        # avoids assembling the gates along an inner axis (a slow copy on CPU)
        h_conv, c_conv = _lstm_update(conv.view(batch, 4, self.conv_channels, *spatial), c[:, :self.conv_channels])
        logic_state = c[:, self.conv_channels:].reshape(batch, groups, -1, *spatial)
        h_logic, c_logic = _lstm_update(logic.view(batch, groups, 4, -1, *spatial), logic_state, gate_dim=2)
        return (torch.cat([h_conv, h_logic.reshape(batch, self.logic_channels, *spatial)], dim=1),
                torch.cat([c_conv, c_logic.reshape(batch, self.logic_channels, *spatial)], dim=1))


def run_recurrence(cell: RecurrentCell, projected: torch.Tensor, state: LSTMState, order: Sequence[int]
                   ) -> Tuple[List[torch.Tensor], LSTMState]:
    """Step `cell` through projected inputs projected[:, t] for t in `order` from `state`; returns h per step
    (indexed by t; None for steps not visited) and the final state."""
    outputs: List[torch.Tensor] = [None] * projected.shape[1]
    for t in order:
        state = cell.step(projected[:, t], state)
        outputs[t] = state[0]
    return outputs, state


def double_pass(cell: RecurrentCell, inputs: torch.Tensor, second_pass: str = "forward") -> torch.Tensor:
    """The double pass of methods.md 3.3 over inputs [B, S, C, *spatial]; returns h [B, S, hidden, *spatial].

    Pass 1 runs t = 1..S from zero states and only keeps its final state; pass 2 runs again with the same
    weights from that state ('forward': t = 1..S; 'reverse': t = S..1) and its h_t are the outputs. The first
    slices therefore see the whole stack, as a bidirectional recurrence would, without extra parameters.
    Gradients flow through both passes. The input part of every gate is computed once, for all slices, and
    shared by the two passes; only the recurrent part runs slice by slice.
    """
    if second_pass not in SECOND_PASS_ORDERS:
        raise ValueError(f"unknown second pass order {second_pass!r}; expected one of {', '.join(SECOND_PASS_ORDERS)}")
    if inputs.ndim < 4 or inputs.shape[1] < 1:
        raise ValueError(f"expected inputs [B, S, C, *spatial] with S >= 1, got shape {tuple(inputs.shape)}")
    batch, slices = inputs.shape[:2]
    projected = cell.project_inputs(inputs.flatten(0, 1))
    projected = projected.view(batch, slices, *projected.shape[1:])
    steps = range(slices)
    _, memory = run_recurrence(cell, projected, cell.initial_state(inputs[:, 0]), steps)
    outputs, _ = run_recurrence(cell, projected, memory, steps if second_pass == "forward" else reversed(steps))
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
