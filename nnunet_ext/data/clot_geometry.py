"""The clot cohort's geometry and acquisition helpers: distances to segments and polylines, bounded draws, and
imaging on a coarser grid (block mean, nearest resampling back, noise)."""
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunet_ext.data.clot_presets import Range


def segment_distance(coords: Sequence[np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel centre to the segment start-end."""
    direction = end - start
    squared = float(direction @ direction)
    offsets = [c - s for c, s in zip(coords, start)]
    t = sum(o * d for o, d in zip(offsets, direction)) / max(squared, 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(sum((o - t * d) ** 2 for o, d in zip(offsets, direction)))


def polyline_distance(coords: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> np.ndarray:
    return np.minimum.reduce([segment_distance(coords, a, b) for a, b in zip(points[:-1], points[1:])])


def _draw(rng: np.random.Generator, bounds: Range) -> float:
    """Uniform in bounds; equal ends draw nothing, so a fixed setting leaves the random stream as it was."""
    return bounds[0] if bounds[0] == bounds[1] else float(rng.uniform(*bounds))


def _count(rng: np.random.Generator, bounds: Tuple[int, int]) -> int:
    """Integer in [lo, hi]; equal ends draw nothing."""
    return bounds[0] if bounds[0] == bounds[1] else int(rng.integers(bounds[0], bounds[1] + 1))


def block_mean(image: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """The image seen by voxels `factor` times larger (edge-padded to a whole number of blocks)."""
    pad = [(0, -n % f) for n, f in zip(image.shape, factor)]
    padded = np.pad(image, pad, mode="edge")
    blocks = [(n // f, f) for n, f in zip(padded.shape, factor)]
    return padded.reshape([d for pair in blocks for d in pair]).mean(axis=(1, 3, 5))


def resample_from_coarse(coarse: np.ndarray, factor: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of a grid with `factor` times larger voxels onto the fine grid (same origin corner),
    as a coregistration with linear interpolation does."""
    scale = np.array([1.0 / f for f in factor])
    return ndimage.affine_transform(coarse, scale, offset=0.5 * scale - 0.5, output_shape=tuple(shape), order=1,
                                    mode="nearest")


def acquire(image: np.ndarray, factor: Sequence[int], noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy acquisition of `image` (given on the fine grid) with voxels `factor` times larger, resampled back
    onto the fine grid; factor 1 is the plain image plus noise."""
    if all(f == 1 for f in factor):
        return image + rng.normal(0, noise_std, image.shape)
    coarse = block_mean(image, factor)
    return resample_from_coarse(coarse + rng.normal(0, noise_std, coarse.shape), factor, image.shape)
