"""Every NNUNET_EXT_* variable our trainers read, parsed and checked in one place: `TrainerEnvironment.from_env`.

The stock `nnUNetv2_train` has no options of ours, so the few settings it cannot take from a trainer's name or
the dataset come from the environment. They are read once, at trainer start-up, before nnU-Net creates any
folder, and every bad value stops the run with a message naming the variable:

  NNUNET_EXT_SAVE_EVERY                checkpoint_latest every N epochs (nnU-Net: 50)
  NNUNET_EXT_FINAL_VALIDATION          0: skip nnUNetv2_train's validation after training (default 1)
  NNUNET_EXT_RESUME_WITH_CURRENT_SETTINGS  1: a --c run (or a fresh start over another training's folder)
                                       uses the current settings, whatever the folder holds (default 0)
  NNUNET_EXT_SEED                      seed of the modality-dropout draws (default 12345)
  NNUNET_EXT_DROPPABLE_CHANNELS        comma-separated channel names; overrides dataset.json's
                                       "droppable_channels" (the results folder's dataset.json records the
                                       channels used)

What defines a model (epochs, iterations per epoch, drop probability, co-training) is spelled in the trainer's
name instead (training/variants.py); the droppable channels a run used are recorded in its results folder's
dataset.json. The variables that once set part of a model are refused with what to write instead, and so is
a variable one typo away from a known one, which would otherwise be ignored without a word.
"""
import difflib
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from nnunet_ext.dropout.config import DEFAULT_SEED

PREFIX = "NNUNET_EXT_"
SAVE_EVERY = "NNUNET_EXT_SAVE_EVERY"
FINAL_VALIDATION = "NNUNET_EXT_FINAL_VALIDATION"
RESUME_WITH_CURRENT_SETTINGS = "NNUNET_EXT_RESUME_WITH_CURRENT_SETTINGS"
SEED = "NNUNET_EXT_SEED"
DROPPABLE_CHANNELS = "NNUNET_EXT_DROPPABLE_CHANNELS"
KNOWN = (SAVE_EVERY, FINAL_VALIDATION, RESUME_WITH_CURRENT_SETTINGS, SEED, DROPPABLE_CHANNELS)
# variables that once set a model and now must be spelled in the trainer name: name -> (what it set, an example)
RETIRED = {
    "NNUNET_EXT_COTRAINING_WEIGHT": ("ModDrop++'s co-training weight", "nnUNetTrainerModDropPlusPlus_p05_w03 "
                                                                       "(weight 0.3)"),
    "NNUNET_EXT_COTRAINING_SIMILARITY": ("ModDrop++'s co-training similarity",
                                         "nnUNetTrainerModDropPlusPlus_p05_w05_mse (MSE)"),
    "NNUNET_EXT_ITERATIONS_PER_EPOCH": ("the training iterations per epoch",
                                        "nnUNetTrainerGradualDrop_p05_100epochs_16it (16 iterations)"),
    "NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH": ("the validation iterations per epoch",
                                            "nnUNetTrainerGradualDrop_p05_100epochs_16it_2valit (2 of them)"),
}


def _positive_int(name: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return int(text)


def _flag(name: str, text: str) -> bool:
    if text.lower() not in ("0", "1", "false", "true"):
        raise ValueError(f"{name} must be 0 or 1, got {text!r}")
    return text.lower() in ("1", "true")


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


def _retired(name: str) -> str:
    what, example = RETIRED[name]
    return f"{name} no longer sets {what}: spell it in the trainer name instead, e.g. {example}"


def _refuse_retired_and_misspelt(environ: Mapping[str, str]) -> None:
    for name in environ:
        if not name.startswith(PREFIX) or name in KNOWN:
            continue
        if name in RETIRED:
            raise ValueError(f"{_retired(name)}, and unset the variable")
        # a misspelt retired variable too: it would otherwise be ignored as silently as it once worked
        close = difflib.get_close_matches(name, (*KNOWN, *RETIRED), n=1, cutoff=0.9)
        if close:
            hint = f" ({_retired(close[0])})" if close[0] in RETIRED else ""
            raise ValueError(f"unknown variable {name}: did you mean {close[0]}?{hint} (our trainers read "
                             f"{', '.join(KNOWN)})")


@dataclass(frozen=True)
class TrainerEnvironment:
    """What the environment asks of a trainer (see the module docstring); None: not set."""
    save_every: Optional[int] = None               # None: nnU-Net's
    final_validation: bool = True
    resume_with_current_settings: bool = False
    seed: int = DEFAULT_SEED
    droppable_channels: Optional[Tuple[str, ...]] = None

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "TrainerEnvironment":
        environ = os.environ if environ is None else environ
        _refuse_retired_and_misspelt(environ)

        def text(name: str) -> str:
            return environ.get(name, "").strip()
        droppable = tuple(n.strip() for n in text(DROPPABLE_CHANNELS).split(",")) if text(DROPPABLE_CHANNELS) \
            else None
        return cls(save_every=_positive_int(SAVE_EVERY, text(SAVE_EVERY)) if text(SAVE_EVERY) else None,
                   final_validation=_flag(FINAL_VALIDATION, text(FINAL_VALIDATION)) if text(FINAL_VALIDATION)
                   else True,
                   resume_with_current_settings=_flag(RESUME_WITH_CURRENT_SETTINGS, text(RESUME_WITH_CURRENT_SETTINGS))
                   if text(RESUME_WITH_CURRENT_SETTINGS) else False,
                   seed=_integer(SEED, text(SEED)) if text(SEED) else DEFAULT_SEED,
                   droppable_channels=droppable)
