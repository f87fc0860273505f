"""Fast CPU forms of the recurrent cells' inner operations, used at inference (no autograd) and, for the
1 x 1 convolutions, in training too: each equals its direct form up to float rounding (tests/test_clot_networks.py
compares them)."""
from typing import Optional

import torch
from torch.nn.modules.conv import _ConvNd


def tanh_in_place(x: torch.Tensor) -> torch.Tensor:
    """tanh in place as 2 sigmoid(2x) - 1: PyTorch's CPU tanh measured 5x slower than its sigmoid here (3.4x
    with the extra passes); the two differ by float rounding (< 2e-7)."""
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


def lstm_update_into(gates: torch.Tensor, cell_state: torch.Tensor, hidden_out: torch.Tensor) -> None:
    """The LSTM state update (recurrent_blocks._lstm_update) without autograd and without new full-size tensors (gates [B, 4, n, *spatial]): the gates
    are overwritten, cell_state is updated in place and h is written into hidden_out. The gates may have size 1
    on spatial axes (a pooled window spanning the whole slice): they broadcast over the state. On CPU a fresh
    full-size temporary costs as much as the arithmetic, so inference reuses its buffers."""
    squashed = gates.narrow(1, 0, 3).sigmoid_()
    candidate = tanh_in_place(gates.select(1, 3)).mul_(squashed.select(1, 0))
    cell_state.mul_(squashed.select(1, 1)).add_(candidate)
    tanh_in_place(hidden_out.copy_(cell_state)).mul_(squashed.select(1, 2))


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   accumulate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A 1 x 1 (x 1) convolution of x [B, C, *spatial] with weight [O, C, 1, ...], plus `accumulate` [B, O, *spatial]
    if given, as one matrix product over the channels (BLAS adds `accumulate` while it writes the result).
    Measured on CPU, one thread, 128 x 128 slices: 5x faster than oneDNN's 1 x 1 convolution for the Logic LSTM's
    36 -> 128 gates and 10x faster than a convolution for a 2-class head."""
    batch, channels = x.shape[:2]
    matrix = weight.reshape(weight.shape[0], channels)
    columns = x.reshape(batch, channels, -1)
    if accumulate is None and bias is None:
        out = torch.matmul(matrix, columns)
    else:
        addend = bias.view(1, -1, 1) if accumulate is None else accumulate.reshape(batch, matrix.shape[0], -1)
        out = torch.baddbmm(addend, matrix.expand(batch, *matrix.shape), columns)
        if accumulate is not None and bias is not None:
            out.add_(bias.view(1, -1, 1))  # in place on the fresh product (its backward does not need it)
    return out.view(batch, matrix.shape[0], *x.shape[2:])


def gate_conv(conv: _ConvNd, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               accumulate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`conv` with another weight and bias (a slice of its own), plus `accumulate` if given; a fresh tensor.
    1 x 1 kernels run as `pointwise_conv`; k x k ones go to oneDNN for float32 on CPU (PyTorch's dispatcher may
    give small convolutions its slower im2col path)."""
    if all(k == 1 for k in weight.shape[2:]) and conv.groups == 1 and all(s == 1 for s in conv.stride) \
            and all(p == 0 for p in conv.padding):
        return pointwise_conv(x, weight, bias, accumulate)
    if x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and torch.backends.mkldnn.is_available() \
            and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple):
        out = torch.mkldnn_convolution(x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    else:
        out = conv._conv_forward(x, weight, bias)
    # in place on the fresh convolution output (a convolution's backward does not need its output)
    return out if accumulate is None else out.add_(accumulate)
