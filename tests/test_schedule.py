"""Exact values of the gradual schedule f(t) at and around each quarter boundary."""
import pytest

from nnunet_ext.dropout.schedule import gradual_factor, quarter_of_training

PAPER = (1.0, 0.5, 0.25, 0.0)
CODE2025 = (0.75, 0.5, 0.25, 0.0)
NONE = (0.0, 0.0, 0.0, 0.0)

# (num_epochs, epoch, expected quarter): the first and last epoch of every quarter, written out by hand
BOUNDARIES = [
    (8, 0, 0), (8, 1, 0), (8, 2, 1), (8, 3, 1), (8, 4, 2), (8, 5, 2), (8, 6, 3), (8, 7, 3),
    (400, 0, 0), (400, 99, 0), (400, 100, 1), (400, 101, 1), (400, 199, 1), (400, 200, 2),
    (400, 299, 2), (400, 300, 3), (400, 399, 3),
    (1000, 0, 0), (1000, 249, 0), (1000, 250, 1), (1000, 499, 1), (1000, 500, 2), (1000, 749, 2),
    (1000, 750, 3), (1000, 999, 3),
    # T not divisible by 4: the boundary T/4 = 2.5 falls between epochs 2 and 3
    (10, 2, 0), (10, 3, 1), (10, 4, 1), (10, 5, 2), (10, 7, 2), (10, 8, 3),
]


@pytest.mark.parametrize("num_epochs,epoch,quarter", BOUNDARIES)
@pytest.mark.parametrize("schedule,values", [("paper", PAPER), ("code2025", CODE2025), ("none", NONE)])
def test_step_schedules_at_quarter_boundaries(num_epochs, epoch, quarter, schedule, values):
    assert quarter_of_training(epoch, num_epochs) == quarter
    assert gradual_factor(epoch, num_epochs, schedule) == values[quarter]


def test_paper_is_the_default_schedule():
    assert [gradual_factor(e, 8) for e in range(8)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]


@pytest.mark.parametrize("epoch,expected", [(0, 1.0), (100, 0.5), (200, 0.25), (299, 0.1258694438),  # 2^-2.99
                                            (300, 0.0), (399, 0.0)])
def test_exponential_schedule(epoch, expected):
    assert gradual_factor(epoch, 400, "exp") == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("epoch,num_epochs", [(-1, 8), (8, 8), (0, 0)])
def test_epoch_outside_the_run_is_rejected(epoch, num_epochs):
    with pytest.raises(ValueError, match="epoch"):
        gradual_factor(epoch, num_epochs)


def test_unknown_schedule_is_rejected_by_name():
    with pytest.raises(ValueError, match="unknown dropout schedule 'linear'"):
        gradual_factor(0, 8, "linear")
