"""Recurrent building blocks of the clot networks: ConvLSTM and Logic LSTM cells, the Logic LSTM's
multi-window max-pool transfer layer, and the double pass over the slices (docs/methods.md §3). The tensor
operations they run on (sliding maxima, the CPU fast paths) are in `nnunet_ext.networks.ops`.

Blocks take `conv_op` like dynamic-network-architectures' blocks, so the same cell runs on 2D slices (the
paper's use: slices are the time axis) or on 3D sub-volumes. A cell maps (x_t, (h, c)) to the next (h, c);
the runners below decide the order in which slices are fed.
"""
from typing import List, Literal, Optional, Sequence, Tuple, Type

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from nnunet_ext.networks.ops.fast_paths import gate_conv, lstm_update_into
from nnunet_ext.networks.ops.sliding_max import box_max, channel_group_max_pool

LSTMState = Tuple[torch.Tensor, torch.Tensor]  # (h, c), each [B, hidden, *spatial]
SECOND_PASS_ORDERS = ("forward", "reverse")


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
    [B, 4, n_h, *spatial]); cell_state has the gates' shape without that axis. No peepholes (docs/methods.md §3)."""
    squashed = torch.sigmoid(gates.narrow(gate_dim, 0, 3))
    c = squashed.select(gate_dim, 1) * cell_state + squashed.select(gate_dim, 0) * torch.tanh(gates.select(gate_dim, 3))
    return squashed.select(gate_dim, 2) * torch.tanh(c), c


def _split_conv(weight: torch.Tensor, input_channels: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """A gate convolution over [x; h] is W_x * x + W_h * h (convolution is linear in its input channels): the
    input part can then run once over every slice, outside the recurrence, and serve both passes."""
    return weight[:, :input_channels], weight[:, input_channels:]


ProjectedInputs = Tuple[torch.Tensor, ...]  # the input part of the gates, one tensor per gate part


def _at_slice(projected: ProjectedInputs, t: int) -> ProjectedInputs:
    return tuple(part[:, t] for part in projected)


class RecurrentCell(nn.Module):
    """A cell whose gate pre-activations are W_x * x_t + W_h * h_{t-1} + b.

    `project_inputs` computes W_x * x + b for any number of slices at once (batched convolutions, shared by both
    passes of `double_pass`), as a tuple with one tensor per gate part (kept apart: joining them would copy every
    slice's gates once more); `step` adds W_h * h_{t-1} and returns the next state; `step_in_place` does the same
    for inference into buffers it is given. forward(x, state) = one whole step.
    """

    hidden_channels: int

    def initial_state(self, x: torch.Tensor) -> LSTMState:
        """Zero (h, c), two distinct tensors (`step_in_place` updates c in place)."""
        shape = (x.shape[0], self.hidden_channels, *x.shape[2:])
        return x.new_zeros(shape), x.new_zeros(shape)

    def project_inputs(self, x: torch.Tensor) -> ProjectedInputs:
        raise NotImplementedError

    def step(self, projected: ProjectedInputs, state: LSTMState) -> LSTMState:
        raise NotImplementedError

    def step_in_place(self, projected: ProjectedInputs, state: LSTMState, hidden_out: torch.Tensor) -> None:
        """The step without autograd: c (state[1]) is updated in place and the new h written into hidden_out,
        which may be state[0] itself (the gates are computed from h before it is overwritten)."""
        h, c = self.step(projected, state)
        state[1].copy_(c)
        hidden_out.copy_(h)

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

    def project_inputs(self, x: torch.Tensor) -> ProjectedInputs:
        weight, _ = _split_conv(self.gates.weight, self.input_channels)
        return (gate_conv(self.gates, x, weight, self.gates.bias),)

    def _gates(self, projected: ProjectedInputs, h: torch.Tensor) -> torch.Tensor:
        """[B, 4, n_h, *spatial] pre-activations (a fresh tensor: the in-place update may overwrite it)."""
        _, recurrent_weight = _split_conv(self.gates.weight, self.input_channels)
        return gate_conv(self.gates, h, recurrent_weight, None, projected[0]).unflatten(1, (4, self.hidden_channels))

    def step(self, projected: ProjectedInputs, state: LSTMState) -> LSTMState:
        h, c = state
        return _lstm_update(self._gates(projected, h), c)

    def step_in_place(self, projected: ProjectedInputs, state: LSTMState, hidden_out: torch.Tensor) -> None:
        h, c = state
        lstm_update_into(self._gates(projected, h), c, hidden_out)


class LogicLSTMCell(RecurrentCell):
    """Logic LSTM cell (Eq. 13-16): the state is split into n_C conv channels and n_L logic channels.

    Every gate is [C; L]: C = k x k conv (n_C outputs), L = T(1 x 1 conv) (n_L outputs), T the multi-window max
    pool. Only the conv part pays k^2 weights per input channel, which is where the parameter saving comes
    from; T gives the gates receptive fields up to the whole slice.

    `conv_part_sees_logic_state` chooses the reading of Eq. (14) (docs/methods.md §3): True (reading B, default) feeds
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

    def project_inputs(self, x: torch.Tensor) -> ProjectedInputs:
        """(W_x^C * x + b^C [N, 4 n_C, *spatial], W_x^L * x + b^L [N, 4 n_L, *spatial], channels as
        `_logic_weights`)."""
        conv_weight, _ = _split_conv(self.conv_part.weight, self.input_channels)
        logic_weight, logic_bias = self._logic_weights()
        logic_weight, _ = _split_conv(logic_weight, self.input_channels)
        return (gate_conv(self.conv_part, x, conv_weight, self.conv_part.bias),
                gate_conv(self.logic_part, x, logic_weight, logic_bias))

    def _gates(self, projected: ProjectedInputs, h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pre-activations of the conv part [B, 4 n_C, *spatial] and of the logic part before T [B, 4 n_L,
        *spatial], channels (group, gate, m); fresh tensors, so that the in-place update may overwrite them."""
        _, conv_weight = _split_conv(self.conv_part.weight, self.input_channels)
        _, logic_weight = _split_conv(self._logic_weights()[0], self.input_channels)
        conv_state = h if self.conv_part_sees_logic_state else h[:, :self.conv_channels]
        return (gate_conv(self.conv_part, conv_state, conv_weight, None, projected[0]),
                gate_conv(self.logic_part, h, logic_weight, None, projected[1]))

    def step(self, projected: ProjectedInputs, state: LSTMState) -> LSTMState:
        h, c = state
        batch, spatial = h.shape[0], h.shape[2:]
        groups = len(self.transfer.windows)
        conv, logic = self._gates(projected, h)
        logic = self.transfer(logic)  # channels (group, gate, m): T's groups are consecutive blocks
        # each gate is [C; L]: update the two parts of the state apart (an LSTM update is per channel), which
        # avoids assembling the gates along an inner axis (a slow copy on CPU)
        h_conv, c_conv = _lstm_update(conv.view(batch, 4, self.conv_channels, *spatial), c[:, :self.conv_channels])
        logic_state = c[:, self.conv_channels:].reshape(batch, groups, -1, *spatial)
        h_logic, c_logic = _lstm_update(logic.view(batch, groups, 4, -1, *spatial), logic_state, gate_dim=2)
        return (torch.cat([h_conv, h_logic.reshape(batch, self.logic_channels, *spatial)], dim=1),
                torch.cat([c_conv, c_logic.reshape(batch, self.logic_channels, *spatial)], dim=1))

    def step_in_place(self, projected: ProjectedInputs, state: LSTMState, hidden_out: torch.Tensor) -> None:
        """Inference step, one pooling group at a time: a group's gates (4 m channels of one slice) stay in the
        CPU's cache from T to the state update, where the whole gate tensor would not; a window that spans the
        slice pools to one value per channel, which the update broadcasts instead of expanding."""
        h, c = state
        batch, conv_channels = h.shape[0], self.conv_channels
        conv, logic = self._gates(projected, h)
        lstm_update_into(conv.view(batch, 4, conv_channels, *conv.shape[2:]), c[:, :conv_channels],
                          hidden_out[:, :conv_channels])
        per_group = self.logic_channels // len(self.transfer.windows)
        for group, window in enumerate(self.transfer.windows):
            gates = box_max(logic[:, 4 * per_group * group:4 * per_group * (group + 1)], window, keep_size=False)
            state_channels = slice(conv_channels + per_group * group, conv_channels + per_group * (group + 1))
            lstm_update_into(gates.view(batch, 4, per_group, *gates.shape[2:]), c[:, state_channels],
                              hidden_out[:, state_channels])


def run_recurrence(cell: RecurrentCell, projected: ProjectedInputs, state: LSTMState, order: Sequence[int]
                   ) -> Tuple[List[torch.Tensor], LSTMState]:
    """Step `cell` through projected inputs (part[:, t] of every part) for t in `order` from `state`; returns h per
    step (indexed by t; None for steps not visited) and the final state."""
    outputs: List[torch.Tensor] = [None] * projected[0].shape[1]
    for t in order:
        state = cell.step(_at_slice(projected, t), state)
        outputs[t] = state[0]
    return outputs, state


def _double_pass_in_place(cell: RecurrentCell, projected: ProjectedInputs, state: LSTMState,
                          second_order: Sequence[int]) -> torch.Tensor:
    """`double_pass` without autograd: pass 1 updates one state in place, pass 2 writes each h_t straight into
    the output (no per-step state tensors, no final stack)."""
    h, c = state
    slices = projected[0].shape[1]
    for t in range(slices):
        cell.step_in_place(_at_slice(projected, t), (h, c), h)
    outputs = h.new_empty((h.shape[0], slices, *h.shape[1:]))
    for t in second_order:
        cell.step_in_place(_at_slice(projected, t), (h, c), outputs[:, t])
        h = outputs[:, t]
    return outputs


def double_pass(cell: RecurrentCell, inputs: torch.Tensor, second_pass: str = "forward") -> torch.Tensor:
    """The double pass of docs/methods.md §3 over inputs [B, S, C, *spatial]; returns h [B, S, hidden, *spatial].

    Pass 1 runs t = 1..S from zero states and only keeps its final state; pass 2 runs again with the same
    weights from that state ('forward': t = 1..S; 'reverse': t = S..1) and its h_t are the outputs. The first
    slices therefore see the whole stack, as a bidirectional recurrence would, without extra parameters.
    Gradients flow through both passes. The input part of every gate is computed once, for all slices, and
    shared by the two passes; only the recurrent part runs slice by slice. Without autograd (inference) the
    steps run in place (`RecurrentCell.step_in_place`).
    """
    if second_pass not in SECOND_PASS_ORDERS:
        raise ValueError(f"unknown second pass order {second_pass!r}; expected one of {', '.join(SECOND_PASS_ORDERS)}")
    if inputs.ndim < 4 or inputs.shape[1] < 1:
        raise ValueError(f"expected inputs [B, S, C, *spatial] with S >= 1, got shape {tuple(inputs.shape)}")
    batch, slices = inputs.shape[:2]
    projected = tuple(part.view(batch, slices, *part.shape[1:])
                      for part in cell.project_inputs(inputs.flatten(0, 1)))
    steps = range(slices)
    second_order = steps if second_pass == "forward" else reversed(steps)
    state = cell.initial_state(inputs[:, 0])
    if not torch.is_grad_enabled():
        return _double_pass_in_place(cell, projected, state, second_order)
    _, memory = run_recurrence(cell, projected, state, steps)
    outputs, _ = run_recurrence(cell, projected, memory, second_order)
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
