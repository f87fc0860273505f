"""Sliding-window maxima of any window size along an axis, stride 1, "same" output size, computed by doubling
(O(n log s)), with a gradient to the winning sample: the Logic LSTM's transfer layer T pools with windows up to a
whole slice."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


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
    return (torch.maximum(first, second),
            torch.where(later, index.narrow(dim, shift, length), index.narrow(dim, 0, length)))


def _sliding_max(x: torch.Tensor, window: int, dim: int, with_index: bool, expand: bool = True
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(max over the 'same' window along dim, position along dim of each maximum or None); see sliding_max_same.
    Where every output sees the whole axis, expand=False returns the maximum with size 1 along dim (it
    broadcasts to the same values) instead of a full-size view."""
    length = x.shape[dim]
    window, before = _clipped_window(window, length)
    if before >= length - 1 and window - 1 - before >= length - 1:  # every output sees the whole axis
        if not with_index:
            values = x.amax(dim=dim, keepdim=True)
            return (values.expand_as(x) if expand else values), None
        values, index = x.max(dim=dim, keepdim=True)
        return values.expand_as(x), index.expand_as(x)
    result = _pad_axis(x, dim, before, window - 1 - before)
    index = None
    # position in x of every padded sample (the -inf padding never wins: no index is out of range); int32 and
    # broadcast along the other axes until the first doubling: half the memory and time of a full int64 index
    if with_index:
        shape = [1] * x.ndim
        shape[dim] = result.shape[dim]
        index = (torch.arange(result.shape[dim], device=x.device, dtype=torch.int32) - before).view(shape)
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
        winners = index.expand_as(grad).to(torch.int64).contiguous()  # scatter_add_ takes int64 only
        grad_input = grad.new_zeros(ctx.shape).scatter_add_(ctx.dim, winners, grad.contiguous())
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
    return torch.cat([box_max(group, int(window)) for group, window in zip(torch.chunk(x, groups, dim=1), windows)],
                     dim=1)


def box_max(x: torch.Tensor, window: int, keep_size: bool = True) -> torch.Tensor:
    """Max over a window x window (x ...) box of every spatial axis of x [B, C, *spatial], separably (the max over a
    box is the max of maxima along each axis). keep_size=False (inference only, no gradient): an axis the window
    spans whole keeps size 1, which broadcasts to the same values."""
    for dim in range(2, x.ndim):
        x = sliding_max_same(x, window, dim) if keep_size else \
            _sliding_max(x, window, dim, with_index=False, expand=False)[0]
    return x
