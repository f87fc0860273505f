"""A trained model's nnunet_ext settings file (`fold_X/nnunet_ext_settings.json`): its name and how it is read.

Kept apart from the trainer so that reading a model folder (nnunet_ext_predict asks which channels a model was
trained to drop) does not import nnU-Net's trainer and torch, which cost seconds per command.
"""
import json
from typing import Dict, List, Mapping

SETTINGS_FILE = "nnunet_ext_settings.json"
CHECKPOINT_KEY = "nnunet_ext_settings"  # the same settings inside every checkpoint (checkpoint["init_args"])


def read_settings_file(path: str) -> Dict:
    """The "settings" of an nnunet_ext_settings.json; ValueError naming the file when it cannot be used."""
    try:
        with open(path) as f:
            settings = json.load(f)["settings"]
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not a valid nnunet_ext settings file ({type(error).__name__}: {error}); "
                         f"restore it, or delete it to continue with the settings stored in the checkpoint") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: \"settings\" is not an object; restore the file or delete it")
    return settings


def settings_differences(a: Mapping, b: Mapping, prefix: str = "") -> List[str]:
    """'key: A vs B' for every (nested) setting that differs, for a message."""
    differences = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            differences += settings_differences(left, right, f"{prefix}{key}.")
        elif left != right:
            differences.append(f"{prefix}{key}: {left!r} vs {right!r}")
    return differences
