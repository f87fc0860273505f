"""Lesion-wise metrics on hand-built masks with known answers, and against a brute-force ISLES'22 count."""
import math

import cc3d
import numpy as np
import pytest

from nnunet_ext.evaluation.lesion_metrics import (LesionMatching, absolute_volume_difference_ml, case_metrics,
                                                  components, detection_rate, lesion_f1)


def _mask(*voxel_groups, shape=(8, 8, 8)):
    """A mask with the listed voxels (z, y, x) or slices set."""
    mask = np.zeros(shape, np.uint8)
    for group in voxel_groups:
        mask[group] = 1
    return mask


EMPTY = _mask()
CUBE = np.s_[2:4, 2:4, 2:4]                       # 8 voxels
CORNER_PAIR = _mask((1, 1, 1), (2, 2, 2))          # touch at a corner only
EDGE_PAIR = _mask((1, 1, 1), (1, 2, 2))            # touch along an edge
ANY, NAN = LesionMatching(), float("nan")


@pytest.mark.parametrize("case,prediction,reference,spacing,matching,expected", [
    ("identical", _mask(CUBE), _mask(CUBE), (1, 1, 1), ANY,
     dict(dice=1.0, tp=1, fp=0, fn=0, lesion_f1=1.0, detection_rate=1.0, abs_volume_difference_ml=0.0,
          abs_lesion_count_difference=0, fp_sizes_ml=[], fn_sizes_ml=[])),
    # two reference voxels touching only diagonally: two lesions under 6- and 18-, one under 26-connectivity
    ("corner 6", _mask((1, 1, 1)), CORNER_PAIR, (1, 1, 1), LesionMatching(connectivity=6),
     dict(dice=2 / 3, reference_lesions=2, tp=1, fn=1, fp=0, lesion_f1=2 / 3, detection_rate=0.5,
          abs_lesion_count_difference=1, fn_sizes_ml=[0.001])),
    ("corner 18", _mask((1, 1, 1)), CORNER_PAIR, (1, 1, 1), LesionMatching(connectivity=18),
     dict(reference_lesions=2, tp=1, fn=1, lesion_f1=2 / 3, detection_rate=0.5)),
    ("corner 26", _mask((1, 1, 1)), CORNER_PAIR, (1, 1, 1), LesionMatching(connectivity=26),
     dict(dice=2 / 3, reference_lesions=1, tp=1, fn=0, fp=0, lesion_f1=1.0, detection_rate=1.0,
          abs_lesion_count_difference=0, fn_sizes_ml=[])),
    ("edge 6", _mask((1, 1, 1)), EDGE_PAIR, (1, 1, 1), LesionMatching(connectivity=6),
     dict(reference_lesions=2, tp=1, fn=1)),
    ("edge 18", _mask((1, 1, 1)), EDGE_PAIR, (1, 1, 1), LesionMatching(connectivity=18),
     dict(reference_lesions=1, tp=1, fn=0)),
    # the same diagonal pair as a prediction: one false positive or none, depending on connectivity
    ("pred corner 6", CORNER_PAIR, _mask((1, 1, 1)), (1, 1, 1), LesionMatching(connectivity=6),
     dict(predicted_lesions=2, tp=1, fp=1, fn=0, lesion_f1=2 / 3, fp_sizes_ml=[0.001])),
    ("pred corner 26", CORNER_PAIR, _mask((1, 1, 1)), (1, 1, 1), ANY,
     dict(predicted_lesions=1, tp=1, fp=0, lesion_f1=1.0, fp_sizes_ml=[])),
    ("empty reference", _mask((1, 1, 1), (1, 1, 2)), EMPTY, (2, 2, 2), ANY,
     dict(dice=0.0, tp=0, fp=1, fn=0, lesion_f1=0.0, detection_rate=NAN, abs_volume_difference_ml=0.016,
          reference_lesions=0, predicted_lesions=1, abs_lesion_count_difference=1, fp_sizes_ml=[0.016])),
    ("empty prediction", EMPTY, _mask(CUBE, (6, 6, 6)), (1, 1, 1), ANY,
     dict(dice=0.0, tp=0, fp=0, fn=2, lesion_f1=0.0, detection_rate=0.0, abs_volume_difference_ml=0.009,
          abs_lesion_count_difference=2, fn_sizes_ml=[0.008, 0.001])),
    ("both empty", EMPTY, EMPTY, (1, 1, 1), ANY,
     dict(dice=1.0, tp=0, fp=0, fn=0, lesion_f1=1.0, detection_rate=NAN, abs_volume_difference_ml=0.0,
          abs_lesion_count_difference=0, reference_volume_ml=0.0)),
    # one predicted component bridging two lesions detects both; two components on one lesion are no FP
    ("bridge", _mask(np.s_[1, 1, 1:6]), _mask((1, 1, 1), (1, 1, 5)), (1, 1, 1), ANY,
     dict(tp=2, fp=0, fn=0, lesion_f1=1.0, abs_lesion_count_difference=1)),
    ("split", _mask((1, 1, 1), (1, 1, 5)), _mask(np.s_[1, 1, 1:6]), (1, 1, 1), ANY,
     dict(tp=1, fp=0, fn=0, predicted_lesions=2, lesion_f1=1.0)),
    # IoU of a 2x2x2 cube and a shifted one sharing one voxel: 1 / 15 = 0.067
    ("iou any", _mask(np.s_[3:5, 3:5, 3:5]), _mask(CUBE), (1, 1, 1), ANY, dict(tp=1, fp=0, fn=0)),
    ("iou 0.05", _mask(np.s_[3:5, 3:5, 3:5]), _mask(CUBE), (1, 1, 1), LesionMatching("iou", iou_threshold=0.05),
     dict(tp=1, fp=0, fn=0)),
    ("iou 0.1", _mask(np.s_[3:5, 3:5, 3:5]), _mask(CUBE), (1, 1, 1), LesionMatching("iou", iou_threshold=0.1),
     dict(tp=0, fp=1, fn=1, lesion_f1=0.0, fp_sizes_ml=[0.008], fn_sizes_ml=[0.008])),
    # centroids 3 voxels apart along x at 2 mm: 6 mm; no overlap needed
    ("centroid 5 mm", _mask((1, 1, 4)), _mask((1, 1, 1)), (1, 1, 2), LesionMatching("centroid", distance_mm=5),
     dict(dice=0.0, tp=0, fp=1, fn=1)),
    ("centroid 7 mm", _mask((1, 1, 4)), _mask((1, 1, 1)), (1, 1, 2), LesionMatching("centroid", distance_mm=7),
     dict(dice=0.0, tp=1, fp=0, fn=0, lesion_f1=1.0)),
    ("centroid z spacing", _mask((4, 1, 1)), _mask((1, 1, 1)), (3, 1, 1), LesionMatching("centroid", distance_mm=7),
     dict(tp=0, fp=1, fn=1)),  # 9 mm along z: spacing is [z, y, x]
    ("volume ml", _mask((1, 1, 1), (1, 1, 2)), _mask(CUBE), (2, 1, 0.5), ANY,
     dict(reference_volume_ml=0.008, prediction_volume_ml=0.002, abs_volume_difference_ml=0.006, fp=1, fn=1)),
])
def test_case_metrics_known_answers(case, prediction, reference, spacing, matching, expected):
    result = case_metrics(prediction, reference, spacing, matching)
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(result[key]), (case, key)
        else:
            assert result[key] == pytest.approx(value), (case, key, result[key])


@pytest.mark.parametrize("tp,fp,fn,f1,rate", [
    (0, 0, 0, 1.0, NAN), (0, 3, 0, 0.0, NAN), (0, 0, 2, 0.0, 0.0), (2, 1, 1, 2 / 3, 2 / 3), (3, 0, 1, 6 / 7, 0.75),
])
def test_f1_and_detection_rate_conventions(tp, fp, fn, f1, rate):
    assert lesion_f1(tp, fp, fn) == pytest.approx(f1)
    assert (math.isnan(detection_rate(tp, fn)) and math.isnan(rate)) or detection_rate(tp, fn) == pytest.approx(rate)


def _isles22_counts(reference, prediction, connectivity):
    """ISLES'22's own definition, one component at a time (slow, obviously right)."""
    reference_labels = cc3d.connected_components(reference, connectivity=connectivity)
    prediction_labels = cc3d.connected_components(prediction, connectivity=connectivity)
    tp = sum(bool(prediction[reference_labels == i].any()) for i in range(1, reference_labels.max() + 1))
    fn = reference_labels.max() - tp
    fp = sum(not reference[prediction_labels == j].any() for j in range(1, prediction_labels.max() + 1))
    return tp, int(fp), int(fn)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("connectivity", [6, 26])
def test_any_overlap_counts_equal_the_isles22_definition(seed, connectivity):
    rng = np.random.default_rng(seed)
    reference = rng.random((16, 16, 16)) > 0.93
    prediction = (reference & (rng.random(reference.shape) > 0.4)) | (rng.random(reference.shape) > 0.95)
    result = case_metrics(prediction, reference, (1, 1, 1), LesionMatching(connectivity=connectivity))
    assert (result["tp"], result["fp"], result["fn"]) == _isles22_counts(reference, prediction, connectivity)
    assert result["tp"] > 0 and result["fp"] > 0 and result["fn"] > 0  # the draw exercises every count


@pytest.mark.parametrize("make,message", [
    (lambda: LesionMatching("overlap"), "unknown matching rule 'overlap'; expected one of any, iou, centroid"),
    (lambda: LesionMatching("iou", iou_threshold=1.0), "IoU threshold must be in [0, 1), got 1.0"),
    (lambda: LesionMatching("centroid", distance_mm=0), "centroid distance must be > 0 mm, got 0"),
    (lambda: LesionMatching(connectivity=8), "connectivity must be one of (6, 18, 26) for 3D masks, got 8"),
    (lambda: components(np.zeros((4, 4)), 26), "expected a 3D mask, got shape (4, 4)"),
    (lambda: case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), (1, 1, 1)), "prediction shape (2, 2, 2) differs"),
    (lambda: case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), (1, 0, 1)), "three positive voxel spacings"),
    (lambda: absolute_volume_difference_ml(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), (1, 1)), "got (1, 1)"),
])
def test_bad_settings_are_refused_with_the_value(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_absolute_volume_difference_uses_the_spacing():
    assert absolute_volume_difference_ml(_mask(CUBE), _mask((0, 0, 0)), (2.0, 2.0, 2.0)) == pytest.approx(0.056)
