"""Which channels may be dropped, and how: settings resolved by modality *name* and validated at start-up.

Droppable channels come from, in this order:
1. the names the trainer is given (from NNUNET_EXT_DROPPABLE_CHANNELS, read by training/environment.py),
2. the key "droppable_channels" (a list of names) in the dataset's `dataset.json`.
Names are those of `dataset.json` "channel_names". Every bad value stops training with a message naming it.
"""
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_ext.dropout.schedule import schedule_names

DATASET_JSON_KEY = "droppable_channels"
DEFAULT_SEED = 12345


def channel_names_from_dataset_json(dataset_json: Mapping) -> List[str]:
    """Channel names in input order ("channel_names", or the legacy "modality" key)."""
    names = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not names:
        raise ValueError("dataset.json has no 'channel_names'")
    return [str(names[k]) for k in sorted(names, key=int)]


def resolve_droppable_channels(channel_names: Sequence[str], requested: Sequence[str]) -> Tuple[int, ...]:
    """Map droppable modality names to channel indices, refusing unknown, duplicate and all-channel requests."""
    requested = [str(r).strip() for r in requested]
    available = ", ".join(channel_names)
    if not requested or any(not r for r in requested):
        raise ValueError(f"no droppable channel given (empty name in {requested}); dataset.json has {available}")
    duplicates = sorted({r for r in requested if requested.count(r) > 1})
    if duplicates:
        raise ValueError(f"droppable channel(s) listed twice: {', '.join(duplicates)}")
    unknown = [r for r in requested if r not in channel_names]
    if unknown:
        raise ValueError(f"unknown modality {', '.join(repr(u) for u in unknown)}; dataset.json has {available}")
    if len(set(channel_names)) != len(channel_names):
        raise ValueError(f"dataset.json channel_names are not unique ({available}); names cannot select channels")
    if len(requested) == len(channel_names):
        raise ValueError(f"every channel ({available}) is droppable; at least one channel must always be kept")
    return tuple(channel_names.index(r) for r in requested)


@dataclass(frozen=True)
class ModalityDropoutConfig:
    """Everything that defines a modality-dropout run; written to the results folder and the training log."""

    channel_names: Tuple[str, ...]
    droppable_names: Tuple[str, ...]
    droppable_indices: Tuple[int, ...]
    drop_probability: float
    schedule: str
    noise_std: float
    seed: int

    def __post_init__(self):
        if not 0.0 <= self.drop_probability <= 1.0:
            raise ValueError(f"drop probability must be in [0, 1], got {self.drop_probability}")
        if self.schedule not in schedule_names():
            raise ValueError(f"unknown dropout schedule {self.schedule!r}; expected one of "
                             f"{', '.join(schedule_names())}")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "ModalityDropoutConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def modality_dropout_config(dataset_json: Mapping, drop_probability: float, schedule: str, noise_std: float,
                            droppable_channels: Optional[Sequence[str]] = None,
                            seed: int = DEFAULT_SEED) -> ModalityDropoutConfig:
    """Resolve the settings of a run: the droppable channels asked for (the environment's, see
    training/environment.py), else dataset.json's "droppable_channels"."""
    channel_names = channel_names_from_dataset_json(dataset_json)
    if droppable_channels:
        requested = list(droppable_channels)
    elif DATASET_JSON_KEY in dataset_json:
        requested = dataset_json[DATASET_JSON_KEY]
        if isinstance(requested, str):
            requested = [requested]
    else:
        raise ValueError(f"no droppable channels chosen: add \"{DATASET_JSON_KEY}\": [names] to dataset.json or set "
                         f"NNUNET_EXT_DROPPABLE_CHANNELS (e.g. ADC); dataset.json has {', '.join(channel_names)}")
    indices = resolve_droppable_channels(channel_names, requested)
    return ModalityDropoutConfig(channel_names=tuple(channel_names),
                                 droppable_names=tuple(channel_names[i] for i in indices),
                                 droppable_indices=indices, drop_probability=float(drop_probability),
                                 schedule=schedule, noise_std=float(noise_std), seed=int(seed))


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of the dropout generator for one (rank, epoch): independent streams per DDP rank, and a run
    resumed with -c draws exactly what the uninterrupted run would have drawn from that epoch on."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, dtype=np.uint64)[0] % (2 ** 63))
