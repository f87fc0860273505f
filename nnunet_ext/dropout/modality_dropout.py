"""Per-sample modality dropout (paper Eqs. 2, 3 and 5): draw once, apply once.

As in batchgeneratorsv2 transforms, randomness lives in `draw_modality_dropout` and the tensor work in
`apply_modality_dropout`, so a draw can be inspected, logged and replayed.

For each sample b and each droppable channel c an independent Bernoulli(drop_probability) decides
whether c is dropped. A dropped channel is multiplied by f(t) + eps, eps ~ N(0, noise_std^2) drawn per
(sample, channel); kept channels are not touched at all (bit-identical). Unlike the public code, each
dropped pair gets its own multiplier (docs/methods.md §6: its reused `mask` alternated 1-d and d).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


@dataclass(frozen=True)
class ModalityDropoutDraw:
    """Outcome of one draw for a batch: which (sample, channel) pairs are dropped and their multipliers."""

    dropped: torch.Tensor      # bool [batch, channels]
    multipliers: torch.Tensor  # float32 [batch, channels]; exactly 1.0 where not dropped

    @property
    def batch_size(self) -> int:
        return self.dropped.shape[0]


def draw_modality_dropout(batch_size: int, num_channels: int, droppable: Sequence[int], drop_probability: float,
                          factor: float, noise_std: float = 0.01,
                          generator: Optional[torch.Generator] = None) -> ModalityDropoutDraw:
    """Draw which channels of each sample are dropped and the multiplier f(t) + eps of each dropped one.

    A sample never loses all of its channels: if every channel is droppable and all were drawn, one of them,
    chosen uniformly, is kept (this is the only case where it can happen).
    """
    droppable = list(droppable)
    if batch_size < 1 or num_channels < 1:
        raise ValueError(f"batch_size and num_channels must be >= 1, got {batch_size} and {num_channels}")
    if len(set(droppable)) != len(droppable):
        raise ValueError(f"droppable channel indices contain duplicates: {droppable}")
    if any(not 0 <= c < num_channels for c in droppable):
        raise ValueError(f"droppable channel indices {droppable} out of range for {num_channels} channels")
    if not 0.0 <= drop_probability <= 1.0:
        raise ValueError(f"drop_probability must be in [0, 1], got {drop_probability}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")

    # Draw a fixed amount of randomness whatever the outcome, so a seeded stream stays aligned across steps.
    uniform = torch.rand(batch_size, len(droppable), generator=generator)
    noise = torch.randn(batch_size, num_channels, generator=generator) * noise_std
    rescue_choice = torch.randint(max(1, len(droppable)), (batch_size,), generator=generator)

    dropped = torch.zeros(batch_size, num_channels, dtype=torch.bool)
    if droppable:
        dropped[:, droppable] = uniform < drop_probability
        every_channel_gone = dropped.all(dim=1)
        for sample in torch.nonzero(every_channel_gone).flatten().tolist():
            dropped[sample, droppable[int(rescue_choice[sample])]] = False

    multipliers = torch.where(dropped, factor + noise, torch.ones_like(noise))
    return ModalityDropoutDraw(dropped=dropped, multipliers=multipliers.float())


def apply_modality_dropout(data: torch.Tensor, draw: ModalityDropoutDraw, inplace: bool = False) -> torch.Tensor:
    """Scale the dropped channels of `data` [batch, channels, *spatial] by their multipliers.

    Only dropped (sample, channel) slices are touched, so kept channels stay bit-identical and the cost is
    proportional to what is dropped.
    """
    if data.ndim < 3 or tuple(data.shape[:2]) != tuple(draw.dropped.shape):
        raise ValueError(f"data of shape {tuple(data.shape)} does not match a draw for "
                         f"[batch, channels] = {tuple(draw.dropped.shape)}")
    out = data if inplace else data.clone()
    for sample, channel in torch.nonzero(draw.dropped).tolist():
        out[sample, channel].mul_(float(draw.multipliers[sample, channel]))
    return out
