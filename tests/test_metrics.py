"""Dice on hand-built masks with known answers."""
import numpy as np
import pytest

from nnunet_ext.evaluation.folders import summarize_by_center
from nnunet_ext.evaluation.metrics import dice


def _mask(slices, shape=(4, 4, 4)):
    mask = np.zeros(shape, np.uint8)
    mask[slices] = 1
    return mask


@pytest.mark.parametrize("prediction,reference,expected", [
    (_mask(np.s_[0:2, 0:2, 0:2]), _mask(np.s_[0:2, 0:2, 0:2]), 1.0),            # identical
    (_mask(np.s_[0:2, 0:2, 0:2]), _mask(np.s_[0:2, 0:2, 0:1]), 2 * 4 / (8 + 4)),  # half inside
    (_mask(np.s_[0:1, 0:1, 0:1]), _mask(np.s_[3:4, 3:4, 3:4]), 0.0),            # disjoint
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), 1.0),                             # both empty
    (_mask(np.s_[0:1, 0:1, 0:1]), np.zeros((4, 4, 4)), 0.0),                     # empty reference
    (np.zeros((4, 4, 4)), _mask(np.s_[0:1, 0:1, 0:1]), 0.0),                     # empty prediction
])
def test_dice_known_values(prediction, reference, expected):
    assert dice(prediction, reference) == pytest.approx(expected)


def test_dice_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_summary_per_center():
    summary = summarize_by_center({"a1": 1.0, "a2": 0.5, "b1": 0.0}, {"a1": "A", "a2": "A", "b1": "B"})
    assert summary["A"] == {"mean": 0.75, "std": 0.25, "n": 2}
    assert summary["all"]["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'c1' is not in the case->center map"):
        summarize_by_center({"c1": 1.0}, {"a1": "A"})
