"""Where the clot trainers crop: the paper's pairs of crops with and without a clot (section 5.2), without a shortcut.

nnU-Net's foreground oversampling puts the chosen foreground voxel at the centre of the crop. With a small object
and networks that have learned absolute position embeddings (the attention models), "clot => centre of the crop" is
learnable, and the sliding window at inference puts clots anywhere: the networks learned the position, not the clot.
So here, as in the paper (a fixed in-plane crop; clot or no clot decided along the slice axis):
  * a crop with a clot: a clot voxel is drawn as nnU-Net does, then the crop's corner is drawn uniformly among the
    corners whose crop holds that voxel (within nnU-Net's allowed range), so the clot lies anywhere in the crop;
  * a crop without a clot: its slice window is drawn among the windows that hold no clot slice, its in-plane
    position uniformly; where every window meets a clot slice, crops are redrawn until they hold no clot voxel.
With nnU-Net's spatial augmentation (rotation, scaling), the loader crops a larger patch and the augmentation
resamples the final patch around its centre: then the clot voxel is placed uniformly in that centred final patch.
Parameters are drawn here (pure functions of a numpy Generator); the loader applies them.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

Bounds = Tuple[List[int], List[int]]


def crop_corner_range(data_shape: Sequence[int], patch_size: Sequence[int], need_to_pad: Sequence[int]) -> Bounds:
    """nnU-Net's range of a crop's lower corner per axis, [lower, upper] inclusive (data_loader.get_bbox): the crop
    may reach need_to_pad // 2 beyond the image on each side (more where the image is smaller than the patch)."""
    pad = [int(p) - int(s) if int(n) + int(s) < int(p) else int(n)
           for s, p, n in zip(data_shape, patch_size, need_to_pad)]
    lower = [-n // 2 for n in pad]
    upper = [int(s) + n // 2 + n % 2 - int(p) for s, p, n in zip(data_shape, patch_size, pad)]
    return lower, upper


def draw_corner_holding(voxel: Sequence[int], patch_size: Sequence[int], bounds: Bounds,
                        rng: np.random.Generator) -> List[int]:
    """A crop corner drawn uniformly among those whose crop holds `voxel` and that lie in `bounds`, per axis.

    Where no allowed corner holds the voxel (it lies in the padding nnU-Net never reaches), the nearest allowed
    corner is used."""
    corner = []
    for v, p, low, high in zip(voxel, patch_size, *bounds):
        first, last = max(low, int(v) - int(p) + 1), min(high, int(v))
        if first > last:
            corner.append(int(np.clip(int(v) - int(p) // 2, low, high)))
        else:
            corner.append(int(rng.integers(first, last + 1)))
    return corner


def centred_crop_offset(patch_size: Sequence[int], final_patch_size: Sequence[int]) -> List[int]:
    """Where the final patch starts inside the loaded patch, per axis, when batchgeneratorsv2's SpatialTransform
    crops it around the centre (random_crop=False): floor(loaded / 2) - floor(final / 2), which is not
    (loaded - final) // 2 when the loaded size is even and the final size odd."""
    if any(int(f) > int(p) for p, f in zip(patch_size, final_patch_size)):
        raise ValueError(f"the final patch {list(final_patch_size)} is larger than the loaded patch {list(patch_size)}")
    return [int(p) // 2 - int(f) // 2 for p, f in zip(patch_size, final_patch_size)]


def draw_corner_holding_centred(voxel: Sequence[int], patch_size: Sequence[int], final_patch_size: Sequence[int],
                                bounds: Bounds, rng: np.random.Generator) -> List[int]:
    """The loaded patch's corner (allowed: `bounds`) such that the final patch cropped around its centre holds
    `voxel`, drawn uniformly among those corners (draw_corner_holding on the final patch, shifted)."""
    offset = centred_crop_offset(patch_size, final_patch_size)
    final_bounds = ([low + o for low, o in zip(bounds[0], offset)], [high + o for high, o in zip(bounds[1], offset)])
    return [c - o for c, o in zip(draw_corner_holding(voxel, final_patch_size, final_bounds, rng), offset)]


def clot_free_slice_starts(clot_slices: Sequence[int], slice_window: int, low: int, high: int) -> np.ndarray:
    """Starts s in [low, high] of slice windows [s, s + slice_window) that hold none of `clot_slices`."""
    starts = np.arange(low, high + 1)
    if len(clot_slices) == 0 or starts.size == 0:
        return starts
    clots = np.asarray(sorted(set(int(s) for s in clot_slices)))
    # a window holds a clot slice iff some clot slice c has s <= c < s + window
    first_at_or_after = np.searchsorted(clots, starts, side="left")
    holds = (first_at_or_after < clots.size) & (clots[np.minimum(first_at_or_after, clots.size - 1)]
                                                 < starts + slice_window)
    return starts[~holds]


def draw_clot_free_corner(clot_slices: Sequence[int], patch_size: Sequence[int], bounds: Bounds, slice_axis: int,
                          rng: np.random.Generator) -> Optional[List[int]]:
    """A crop corner whose slice window holds no clot slice (drawn uniformly among such windows), in-plane uniform
    in `bounds`; None where every allowed slice window meets a clot slice."""
    lower, upper = bounds
    starts = clot_free_slice_starts(clot_slices, int(patch_size[slice_axis]), lower[slice_axis], upper[slice_axis])
    if starts.size == 0:
        return None
    corner = [int(rng.integers(low, high + 1)) for low, high in zip(lower, upper)]
    corner[slice_axis] = int(starts[rng.integers(0, starts.size)])
    return corner


def foreground_voxels(class_locations: Optional[Dict], excluded_key=None) -> np.ndarray:
    """Every stored foreground location (nnU-Net's class_locations rows [channel, *position]) as [n, 1 + dims];
    `excluded_key` (nnU-Net's annotated-classes key for ignore labels) is not foreground."""
    arrays = [np.asarray(v) for k, v in (class_locations or {}).items()
              if not (isinstance(k, tuple) and k == excluded_key) and np.asarray(v).size]
    return np.concatenate(arrays, axis=0) if arrays else np.zeros((0, 4), dtype=np.int64)


def bbox_holds_foreground(lower: Union[List[int], np.ndarray], upper: Union[List[int], np.ndarray],
                          locations: Optional[Dict]) -> bool:
    """Whether any stored foreground voxel (nnU-Net's class_locations, rows [channel, *position]) lies in the
    box [lower, upper)."""
    voxels = foreground_voxels(locations)
    if voxels.size == 0:
        return False
    lower, upper = np.asarray(lower), np.asarray(upper)
    return bool(np.any(np.all((voxels[:, 1:] >= lower) & (voxels[:, 1:] < upper), axis=1)))
