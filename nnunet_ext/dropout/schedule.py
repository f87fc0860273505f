"""The gradual modality-dropout schedule f(t) (paper Eq. 4, docs/methods.md §1).

f is the multiplier a *dropped* channel gets at epoch t: 1 leaves the channel intact, 0 blacks it out.
The step presets are piecewise constant over quarters of `num_epochs` (not over absolute epochs: the
public code's fixed 250/500/750 thresholds are wrong for any run that is not 1000 epochs long).
"""
from typing import Dict, Tuple

# Values of f on the quarters [0, T/4), [T/4, T/2), [T/2, 3T/4), [3T/4, T).
SCHEDULE_PRESETS: Dict[str, Tuple[float, float, float, float]] = {
    "paper": (1.0, 0.5, 0.25, 0.0),      # the paper's prose; default
    "code2025": (0.75, 0.5, 0.25, 0.0),  # what the authors' 2025 code runs
    "none": (0.0, 0.0, 0.0, 0.0),        # plain modality dropout = MultiUnet in nnU-Net
}
_CONTINUOUS = ("exp",)  # f(t) = 2^(-4t/T) before 3T/4, then 0


def schedule_names() -> Tuple[str, ...]:
    return tuple(SCHEDULE_PRESETS) + _CONTINUOUS


def quarter_of_training(epoch: int, num_epochs: int) -> int:
    """Index 0..3 of the quarter that `epoch` (0-based) falls in; integer arithmetic, so boundaries are exact."""
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    if not 0 <= epoch < num_epochs:
        raise ValueError(f"epoch must be in [0, {num_epochs}), got {epoch}")
    return min(3, (4 * epoch) // num_epochs)


def gradual_factor(epoch: int, num_epochs: int, schedule: str = "paper") -> float:
    """f(t) for 0-based `epoch` of a run of `num_epochs` epochs."""
    quarter = quarter_of_training(epoch, num_epochs)
    if schedule in SCHEDULE_PRESETS:
        return SCHEDULE_PRESETS[schedule][quarter]
    if schedule == "exp":
        return 0.0 if quarter == 3 else 2.0 ** (-4.0 * epoch / num_epochs)
    raise ValueError(f"unknown dropout schedule {schedule!r}; expected one of {', '.join(schedule_names())}")
