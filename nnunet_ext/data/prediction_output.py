"""A prediction folder holds predictions made one way, and its report says which.

`nnunet_ext_predict` writes OUT/nnunet_ext_predict.json *before* nnU-Net starts (marked incomplete) and again when
it has finished, with the settings that decide what the predictions are (model, folds, checkpoint, absent and
rebuilt channels, nnU-Net's options). A run into a folder whose predictions were made otherwise is refused, so a
folder never mixes all-channel predictions with ADC-absent ones under a report that describes only one of them
(a killed rerun did exactly that), and nnU-Net's `--continue_prediction` only ever continues predictions made the
same way.
"""
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence

REPORT_FILE = "nnunet_ext_predict.json"
# nnUNetv2_predict options that change how fast or verbosely it runs, not what it predicts: (option, values)
OPERATIONAL_OPTIONS = {"-device": 1, "-npp": 1, "-nps": 1, "-num_parts": 1, "-part_id": 1,
                       "--continue_prediction": 0, "--verbose": 0}


def prediction_defining_options(passthrough: Sequence[str]) -> List[str]:
    """The nnUNetv2_predict options that decide the predictions (e.g. --disable_tta, -step_size 0.5, -f 0), in
    the order given, without the operational ones (devices, workers, --continue_prediction)."""
    kept: List[str] = []
    skip = 0
    for token in passthrough:
        if skip:
            skip -= 1
            continue
        if token in OPERATIONAL_OPTIONS:
            skip = OPERATIONAL_OPTIONS[token]
            continue
        kept.append(token)
    return kept


def settings_differences(stored: Mapping, current: Mapping) -> List[str]:
    """'missing: [] there, ['ADC'] now' for every setting that differs."""
    return [f"{key}: {stored.get(key)!r} there, {current.get(key)!r} now"
            for key in sorted(set(stored) | set(current)) if stored.get(key) != current.get(key)]


def read_report(output_folder: str) -> Optional[Dict]:
    path = os.path.join(output_folder, REPORT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({error}); the predictions beside it cannot be told apart: choose "
                         f"another output folder or empty this one") from None


def check_output_folder(output_folder: str, settings: Mapping) -> None:
    """Refuse an output folder that holds anything but predictions made with `settings` (by this command)."""
    if not os.path.isdir(output_folder):
        if os.path.exists(output_folder):
            raise ValueError(f"the output {output_folder} exists and is not a folder")
        return
    entries = os.listdir(output_folder)
    if not entries:
        return
    report = read_report(output_folder)
    if report is None:
        raise ValueError(f"the output folder {output_folder} holds {len(entries)} file(s) that nnunet_ext_predict did "
                         f"not write (no {REPORT_FILE}); choose a new or empty folder, so that its report describes "
                         f"every prediction in it")
    differences = settings_differences(report.get("settings", {}), settings)
    if differences:
        state = "a complete" if report.get("complete", True) else "an interrupted"
        raise ValueError(f"the output folder {output_folder} holds the predictions of {state} run made with other "
                         "settings (" + "; ".join(differences) + "); choose another output folder or empty this "
                         "one (a folder never mixes predictions made two ways)")
