"""Lesion-wise metrics of one binary prediction against one binary reference (ISLES'22-style and the paper's).

A *lesion* is a connected component (cc3d; 6-, 18- or 26-connectivity, the same for both masks). Reference
lesions and predicted components are paired by a matching rule:

  * ``any``      a pair matches if the two share at least one voxel (the ISLES'22 rule);
  * ``iou``      a pair matches if their intersection over union is strictly above a threshold
                 (``iou`` with threshold 0 is ``any``);
  * ``centroid`` a pair matches if their centroids are at most ``distance_mm`` apart (no overlap needed).

Counts follow ISLES'22: a reference lesion with at least one match is a true positive (TP), one without is a
false negative (FN); a predicted component without a match is a false positive (FP). One predicted component
may thus detect several reference lesions, and several components may detect one lesion without being FPs.

Empty-mask conventions, the same everywhere in nnunet-ext:
  * Dice (`metrics.dice`): both empty -> 1.0; exactly one empty -> 0.0.
  * lesion-wise F1 = TP / (TP + (FP + FN) / 2): both empty (TP + FP + FN = 0) -> 1.0; an empty reference
    with any predicted component, or an empty prediction with any reference lesion -> 0.0.
  * detection rate = TP / (TP + FN): empty reference -> NaN (there is nothing to detect); summaries
    average over the cases where it is defined and report how many those are.
  * volume difference, lesion counts, count difference and FP/FN sizes are always defined (0 or empty).
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import cc3d
import numpy as np

from nnunet_ext.evaluation.metrics import dice

CONNECTIVITIES = (6, 18, 26)
MATCHING_RULES = ("any", "iou", "centroid")


@dataclass(frozen=True)
class LesionMatching:
    """How reference lesions and predicted components are paired (see the module docstring)."""

    rule: str = "any"
    iou_threshold: float = 0.1      # used by rule "iou": a pair matches if IoU > iou_threshold
    distance_mm: float = 10.0       # used by rule "centroid": a pair matches if centroid distance <= distance_mm
    connectivity: int = 26

    def __post_init__(self):
        if self.rule not in MATCHING_RULES:
            raise ValueError(f"unknown matching rule {self.rule!r}; expected one of {', '.join(MATCHING_RULES)}")
        if not 0.0 <= self.iou_threshold < 1.0:
            raise ValueError(f"IoU threshold must be in [0, 1), got {self.iou_threshold}")
        if not self.distance_mm > 0:
            raise ValueError(f"centroid distance must be > 0 mm, got {self.distance_mm}")
        if self.connectivity not in CONNECTIVITIES:
            raise ValueError(f"connectivity must be one of {CONNECTIVITIES} for 3D masks, got {self.connectivity}")


def components(mask: np.ndarray, connectivity: int = 26) -> Tuple[np.ndarray, int]:
    """Connected components of a binary mask: (labels 1..n, 0 = background; n)."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES} for 3D masks, got {connectivity}")
    if mask.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {mask.shape}")
    labels, count = cc3d.connected_components(np.ascontiguousarray(mask, dtype=bool), connectivity=connectivity,
                                              return_N=True)
    return labels, int(count)


@dataclass(frozen=True)
class ComponentPairs:
    """Voxel overlaps, sizes and centroids of the components of two label maps, from one pass over the union."""

    overlap: np.ndarray           # (n_ref, n_pred) voxels shared by reference lesion i and predicted component j
    reference_sizes: np.ndarray   # (n_ref,) voxels
    prediction_sizes: np.ndarray  # (n_pred,) voxels
    reference_centroids: np.ndarray   # (n_ref, 3) voxel coordinates [z, y, x]
    prediction_centroids: np.ndarray  # (n_pred, 3)


def component_pairs(reference_labels: np.ndarray, n_reference: int, prediction_labels: np.ndarray,
                    n_prediction: int) -> ComponentPairs:
    # only foreground voxels of either mask matter, which keeps this fast for small lesions in big volumes
    coordinates = np.nonzero((reference_labels > 0) | (prediction_labels > 0))
    ref = reference_labels[coordinates].astype(np.int64)
    pred = prediction_labels[coordinates].astype(np.int64)
    joint = np.bincount(ref * (n_prediction + 1) + pred, minlength=(n_reference + 1) * (n_prediction + 1))
    joint = joint.reshape(n_reference + 1, n_prediction + 1)

    def centroids(labels: np.ndarray, n: int, sizes: np.ndarray) -> np.ndarray:
        sums = np.stack([np.bincount(labels, weights=c, minlength=n + 1)[1:] for c in coordinates], axis=1)
        return sums / np.maximum(sizes, 1)[:, None]

    reference_sizes = joint[1:].sum(axis=1)
    prediction_sizes = joint[:, 1:].sum(axis=0)
    return ComponentPairs(joint[1:, 1:], reference_sizes, prediction_sizes,
                          centroids(ref, n_reference, reference_sizes).reshape(n_reference, 3),
                          centroids(pred, n_prediction, prediction_sizes).reshape(n_prediction, 3))


def match_matrix(pairs: ComponentPairs, matching: LesionMatching,
                 spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Boolean (n_ref, n_pred): which reference lesion matches which predicted component under the rule."""
    if matching.rule == "any":
        return pairs.overlap > 0
    if matching.rule == "iou":
        union = pairs.reference_sizes[:, None] + pairs.prediction_sizes[None, :] - pairs.overlap
        iou = pairs.overlap / np.maximum(union, 1)
        return (pairs.overlap > 0) & (iou > matching.iou_threshold)
    scale = np.asarray(spacing_zyx, dtype=float)
    difference = (pairs.reference_centroids[:, None, :] - pairs.prediction_centroids[None, :, :]) * scale
    return np.sqrt((difference ** 2).sum(axis=-1)) <= matching.distance_mm


def lesion_f1(tp: int, fp: int, fn: int) -> float:
    """ISLES'22 lesion-wise F1; 1.0 when there is nothing to find and nothing found."""
    if tp + fp + fn == 0:
        return 1.0
    return tp / (tp + (fp + fn) / 2.0)


def detection_rate(tp: int, fn: int) -> float:
    """Share of reference lesions detected; NaN for an empty reference (nothing to detect)."""
    return tp / (tp + fn) if tp + fn else float("nan")


def voxel_volume_ml(spacing_zyx: Sequence[float]) -> float:
    if len(spacing_zyx) != 3 or not all(s > 0 for s in spacing_zyx):
        raise ValueError(f"expected three positive voxel spacings in mm, got {tuple(spacing_zyx)}")
    return float(np.prod(np.asarray(spacing_zyx, dtype=float))) / 1000.0  # mm^3 -> ml


def absolute_volume_difference_ml(prediction: np.ndarray, reference: np.ndarray,
                                  spacing_zyx: Sequence[float]) -> float:
    """|V(prediction) - V(reference)| in ml (ISLES'22 AVD)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    difference = int(np.count_nonzero(prediction)) - int(np.count_nonzero(reference))
    return abs(difference) * voxel_volume_ml(spacing_zyx)


def case_metrics(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: Sequence[float],
                 matching: LesionMatching = LesionMatching()) -> Dict:
    """Every metric of one case for binary masks (nonzero = foreground); arrays and spacing in [z, y, x].

    Returns scalars (dice, volumes in ml, lesion counts, F1, detection rate, count difference) and the sizes in
    ml of the false-positive components and false-negative lesions, largest first.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    voxel_ml = voxel_volume_ml(spacing_zyx)
    reference_labels, n_reference = components(reference, matching.connectivity)
    prediction_labels, n_prediction = components(prediction, matching.connectivity)
    pairs = component_pairs(reference_labels, n_reference, prediction_labels, n_prediction)
    matches = match_matrix(pairs, matching, spacing_zyx)
    detected = matches.any(axis=1)
    unmatched = ~matches.any(axis=0)
    tp, fn, fp = int(detected.sum()), int((~detected).sum()), int(unmatched.sum())
    reference_voxels = int(pairs.reference_sizes.sum())
    prediction_voxels = int(pairs.prediction_sizes.sum())

    def sizes_ml(sizes: np.ndarray) -> List[float]:
        return sorted((float(s) * voxel_ml for s in sizes), reverse=True)

    return {
        "dice": dice(prediction_labels > 0, reference_labels > 0),
        "reference_volume_ml": reference_voxels * voxel_ml,
        "prediction_volume_ml": prediction_voxels * voxel_ml,
        "abs_volume_difference_ml": absolute_volume_difference_ml(prediction, reference, spacing_zyx),
        "reference_lesions": n_reference,
        "predicted_lesions": n_prediction,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "lesion_f1": lesion_f1(tp, fp, fn),
        "detection_rate": detection_rate(tp, fn),
        "abs_lesion_count_difference": abs(n_prediction - n_reference),
        "fp_sizes_ml": sizes_ml(pairs.prediction_sizes[unmatched]),
        "fn_sizes_ml": sizes_ml(pairs.reference_sizes[~detected]),
    }


# the scalar metrics of `case_metrics`, in the order tables and CSV files show them
SCALAR_METRICS = ("dice", "abs_volume_difference_ml", "lesion_f1", "detection_rate", "abs_lesion_count_difference",
                  "tp", "fp", "fn", "reference_lesions", "predicted_lesions", "reference_volume_ml",
                  "prediction_volume_ml")
