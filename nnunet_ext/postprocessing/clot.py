"""Clot post-processing steps (paper section 4.2.4, docs/methods.md §4), each a pure function mask -> mask.

* `remove_small_objects`: drop connected components of fewer than n_min voxels (paper: 20).
* `keep_largest_object`: keep the biggest component. Ties: every component of the largest size is kept
  (no arbitrary pick; on real predictions exact ties are rare, and dropping one at random would make the
  result depend on the labelling order).
* `keep_closest_to_lesion` (Eq. 17): with c_i the centroid of candidate i and c_L that of the predicted
  lesion, keep O_i iff ||c_i - c_L|| <= min_j ||c_j - c_L|| + d (paper: d = 20 pixels; `units` 'voxels' or
  'mm'). Without a predicted lesion there is nothing to measure against and the mask is returned unchanged.
* `grow_by_threshold`: hysteresis growing of the detected objects into face-connected voxels whose
  probability exceeds th (paper: 0.3), until nothing changes; i.e. the components of (mask or p > th) that
  touch the mask.
An empty mask stays empty through every step. Components use cc3d; connectivity 26 unless stated.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cc3d
import numpy as np

from nnunet_ext.evaluation.lesion_metrics import components


def _check_mask(mask: np.ndarray) -> np.ndarray:
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    return mask.astype(bool)


def remove_small_objects(mask: np.ndarray, min_voxels: int = 20, connectivity: int = 26) -> np.ndarray:
    if min_voxels < 1:
        raise ValueError(f"min_voxels must be >= 1, got {min_voxels}")
    mask = _check_mask(mask)
    return cc3d.dust(mask, threshold=min_voxels, connectivity=connectivity, in_place=False).astype(bool)


def keep_largest_object(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    labels, count = components(_check_mask(mask), connectivity)
    if count == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    largest = np.flatnonzero(sizes == sizes.max()) + 1
    return np.isin(labels, largest)


def keep_closest_to_lesion(mask: np.ndarray, lesion: np.ndarray, margin: float = 20.0, units: str = "voxels",
                           spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), connectivity: int = 26) -> np.ndarray:
    mask, lesion = _check_mask(mask), _check_mask(lesion)
    if mask.shape != lesion.shape:
        raise ValueError(f"lesion mask shape {lesion.shape} differs from the clot mask shape {mask.shape}")
    if units not in ("voxels", "mm"):
        raise ValueError(f"units must be 'voxels' or 'mm', got {units!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    labels, count = components(mask, connectivity)
    if count == 0 or not lesion.any():
        return mask
    scale = np.asarray(spacing_zyx, float) if units == "mm" else np.ones(3)
    centroids = np.asarray(cc3d.statistics(labels)["centroids"][1:], float)
    lesion_centroid = np.argwhere(lesion).mean(axis=0)
    distances = np.linalg.norm((centroids - lesion_centroid) * scale, axis=1)
    keep = np.flatnonzero(distances <= distances.min() + margin) + 1
    return np.isin(labels, keep)


def grow_by_threshold(mask: np.ndarray, probabilities: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    mask = _check_mask(mask)
    if probabilities.shape != mask.shape:
        raise ValueError(f"probability map shape {probabilities.shape} differs from the mask shape {mask.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if np.isnan(probabilities).any() or probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("probabilities must be in [0, 1] without NaN")
    if not mask.any():
        return mask
    labels = cc3d.connected_components(mask | (probabilities > threshold), connectivity=6)
    seeds = np.unique(labels[mask])
    return np.isin(labels, seeds[seeds > 0])


# ---- chains --------------------------------------------------------------------------------------------

# name -> (what it needs beyond the mask, default parameter; None: takes none)
STEPS: Dict[str, Tuple[Optional[str], Optional[float]]] = {
    "min_size": (None, 20),
    "largest": (None, None),
    "lesion_distance": ("lesion", 20.0),
    "threshold": ("probabilities", 0.3),
}


def parse_step(text: str) -> Tuple[str, Optional[float]]:
    """'min_size:20' -> ('min_size', 20.0); 'largest' -> ('largest', None); defaults where no value is given."""
    name, _, value = text.partition(":")
    if name not in STEPS:
        raise ValueError(f"unknown post-processing step {name!r}; expected one of {', '.join(STEPS)}")
    if STEPS[name][1] is None:
        if value:
            raise ValueError(f"step {name!r} takes no value, got {value!r}")
        return name, None
    try:
        number = float(value) if value else float(STEPS[name][1])
    except ValueError:
        raise ValueError(f"step {name!r}: {value!r} is not a number") from None
    problem = step_value_problem(name, number)
    if problem:
        raise ValueError(f"step {name!r}: {value!r} {problem}")
    return name, number


def step_value_problem(name: str, value: float) -> Optional[str]:
    """Why `value` cannot parameterise step `name` (None if it can): NaN / inf never can (a NaN distance removed
    every object, an infinite size overflowed)."""
    if not math.isfinite(value):
        return "is not a finite number"
    if name == "min_size" and (value < 1 or value != int(value)):
        return "is not a whole number of voxels >= 1"
    if name == "lesion_distance" and value < 0:
        return "is negative; expected a distance >= 0"
    if name == "threshold" and not 0.0 <= value <= 1.0:
        return "is not a probability in [0, 1]"
    return None


def needed_inputs(steps: Sequence[Tuple[str, Optional[float]]]) -> List[str]:
    return sorted({STEPS[name][0] for name, _ in steps if STEPS[name][0] is not None})


def apply_chain(mask: np.ndarray, steps: Sequence[Tuple[str, Optional[float]]], probabilities: np.ndarray = None,
                lesion: np.ndarray = None, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
                distance_units: str = "voxels") -> np.ndarray:
    """Apply the steps in the given order."""
    result = _check_mask(mask)
    for name, value in steps:
        if name == "min_size":
            result = remove_small_objects(result, int(value))
        elif name == "largest":
            result = keep_largest_object(result)
        elif name == "lesion_distance":
            if lesion is None:
                raise ValueError("step 'lesion_distance' needs the predicted lesion mask")
            result = keep_closest_to_lesion(result, lesion, value, distance_units, spacing_zyx)
        elif name == "threshold":
            if probabilities is None:
                raise ValueError("step 'threshold' needs the predicted probabilities (--save_probabilities)")
            result = grow_by_threshold(result, probabilities, value)
        else:
            raise ValueError(f"unknown post-processing step {name!r}")
    return result
