"""How far a training has come, read from nnU-Net's own training log: for the harnesses' progress lines while
their jobs run (a training of the clot tables takes tens of minutes, a run of Tables 5-7 hours)."""
import glob
import math
import os
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence

_EPOCH = re.compile(r"^\S+ \S+ Epoch (\d+)\s*$", re.MULTILINE)
_PSEUDO_DICE = re.compile(r"Pseudo dice \[(.*)\]")
_EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")
RECENT_EPOCHS = 10
_NUMBER = re.compile(r"(?:np\.float\d+\()?(-?[0-9.]+(?:e-?\d+)?|nan)\)?")


@dataclass(frozen=True)
class TrainingProgress:
    epoch: int                        # the epoch running now (0-based, as nnU-Net logs it)
    epochs: int                       # of the training
    pseudo_dice: Optional[float]      # the last validation pseudo Dice (mean over the foreground classes)
    seconds_per_epoch: Optional[float]  # mean of the last RECENT_EPOCHS epoch times (the machine's load now)

    @property
    def seconds_left(self) -> Optional[float]:
        if self.seconds_per_epoch is None:
            return None
        return max(0, self.epochs - self.epoch) * self.seconds_per_epoch

    def line(self) -> str:
        """'epoch 41/400, pseudo Dice 0.52, ~15 min left'."""
        parts = [f"epoch {self.epoch}/{self.epochs}"]
        if self.pseudo_dice is not None:
            parts.append(f"pseudo Dice {self.pseudo_dice:.2f}")
        if self.seconds_left is not None:
            parts.append(f"~{self.seconds_left / 60:.0f} min left")
        return ", ".join(parts)


def training_progress(log_text: str, epochs: int) -> Optional[TrainingProgress]:
    """The progress in one nnU-Net training log (None before its first epoch)."""
    started = [int(e) for e in _EPOCH.findall(log_text)]
    if not started:
        return None
    history = pseudo_dice_history([log_text])
    dice = history[max(history)] if history else None
    times = [float(t) for t in _EPOCH_TIME.findall(log_text)][-RECENT_EPOCHS:]
    return TrainingProgress(started[-1], epochs, dice, sum(times) / len(times) if times else None)


def latest_training_log(fold_folder: str) -> Optional[str]:
    """The newest training_log_*.txt of a fold folder (a run continued with --c starts a new one)."""
    logs = glob.glob(os.path.join(fold_folder, "training_log_*.txt"))
    return max(logs, key=os.path.getmtime) if logs else None


def fold_progress(fold_folder: str, epochs: int) -> Optional[TrainingProgress]:
    log = latest_training_log(fold_folder)
    if log is None:
        return None
    with open(log, errors="replace") as f:
        return training_progress(f.read(), epochs)


def pseudo_dice_history(log_texts: Sequence[str]) -> Dict[int, float]:
    """Epoch -> validation pseudo Dice (mean over the foreground classes that have one) from a training's logs in the order they
    were written (a run continued with --c writes a new log; a repeated epoch takes the later value)."""
    history: Dict[int, float] = {}
    for text in log_texts:
        epoch = None
        for line in text.splitlines():
            started = _EPOCH.match(line)
            if started:
                epoch = int(started.group(1))
                continue
            pseudo = _PSEUDO_DICE.search(line)
            if pseudo and epoch is not None:
                # nnU-Net logs nan for a class absent from the validation batches and from their predictions
                values = [v for v in (float(t) for t in _NUMBER.findall(pseudo.group(1))) if not math.isnan(v)]
                if values:
                    history[epoch] = sum(values) / len(values)
    return history


@dataclass(frozen=True)
class ValidationCourse:
    """How a training's validation pseudo Dice went: its best, the mean of the last `window` epochs, and how many
    epochs after the best it sat at 0 (the collapse UpAttLLSTM showed with 12 skip features)."""
    epochs: int
    best: float
    best_epoch: int
    last_mean: float
    window: int
    zero_after_best: int

    def text(self) -> str:
        return (f"best {self.best:.2f} (epoch {self.best_epoch}), last {self.window} epochs {self.last_mean:.2f}, "
                f"{self.zero_after_best} epochs at 0 after the best")


def validation_course(history: Mapping[int, float], window: int = 100) -> Optional[ValidationCourse]:
    """None for a training without any pseudo Dice."""
    if not history:
        return None
    epochs = sorted(history)
    best_epoch = max(epochs, key=lambda e: (history[e], -e))  # the first epoch at the best value
    last = [history[e] for e in epochs[-window:]]
    return ValidationCourse(len(epochs), history[best_epoch], best_epoch, sum(last) / len(last), min(window, len(last)),
                            sum(1 for e in epochs if e > best_epoch and history[e] == 0.0))


def fold_validation_course(fold_folder: str, window: int = 100) -> Optional[ValidationCourse]:
    logs = sorted(glob.glob(os.path.join(fold_folder, "training_log_*.txt")), key=os.path.getmtime)
    texts = []
    for log in logs:
        with open(log, errors="replace") as f:
            texts.append(f.read())
    return validation_course(pseudo_dice_history(texts), window)
