"""The clot study's datasets beside the cohort: the lesion model's training set, the one-validation-case split, and
how runs map onto nnU-Net folds."""
import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

from nnunet_ext.data.clot_cohort import LESION_LABEL_FOLDERS
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.experiments.clot.profiles import UNSEEN_CENTER


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # test images are read only: a hard link saves the copy
    except OSError:
        shutil.copyfile(source, target)


def derive_lesion_dataset(source: str, raw_root: str, dataset_id: int, name: str, channels: Sequence[str] = ("DWI",),
                          held_out_center: Optional[str] = UNSEEN_CENTER) -> str:
    """The clot cohort's images (`channels` only) with its lesion labels (labelsTr_lesion / labelsTs_lesion) as
    the target: the training set of the separate lesion model that the lesion-distance step needs."""
    with open(os.path.join(source, "dataset.json")) as f:
        source_json = json.load(f)
    with open(os.path.join(source, "case_centers.json")) as f:
        centers: Dict[str, str] = json.load(f)
    names = [source_json["channel_names"][str(i)] for i in range(len(source_json["channel_names"]))]
    unknown = [c for c in channels if c not in names]
    if unknown:
        raise ValueError(f"channel(s) {', '.join(unknown)} not in {source} (it has {', '.join(names)})")
    ending = source_json["file_ending"]
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    with staged_dataset_folder(raw_root, folder_name) as staging:
        kept = {}
        for split, label_folder in LESION_LABEL_FOLDERS.items():
            os.makedirs(os.path.join(staging, f"images{split}"))
            os.makedirs(os.path.join(staging, f"labels{split}"))
            for label_file in sorted(os.listdir(os.path.join(source, label_folder))):
                case = label_file[:-len(ending)]
                if not label_file.endswith(ending) or (split == "Tr" and centers[case] == held_out_center):
                    continue
                kept[case] = centers[case]
                shutil.copyfile(os.path.join(source, label_folder, label_file),
                                os.path.join(staging, f"labels{split}", label_file))
                for new_index, channel in enumerate(channels):
                    shutil.copyfile(
                        os.path.join(source, f"images{split}", f"{case}_{names.index(channel):04d}{ending}"),
                        os.path.join(staging, f"images{split}", f"{case}_{new_index:04d}{ending}"))
        write_json(os.path.join(staging, "dataset.json"), {
            "channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": {"background": 0, "lesion": 1},
            "numTraining": len(os.listdir(os.path.join(staging, "labelsTr"))), "file_ending": ending, "name": name,
            "derived_from": {"source": source, "channels": list(channels), "labels": "lesion",
                             "held_out_center": held_out_center}})
        write_json(os.path.join(staging, "case_centers.json"), kept)
    return os.path.join(raw_root, folder_name)


def validation_split(cases: Sequence[str], runs: int = 1, validation_cases: int = 1) -> List[Dict[str, List[str]]]:
    """One fold per run, every fold the same: `validation_cases` cases validated on (every (n // k)-th of the sorted
    cases, from the first: spread over the centers, whose names sort together), the rest trained on. nnU-Net's
    5-fold split would keep a fifth of a small cohort out of training, and the harness evaluates on the held-out
    test cases itself (the final validation is skipped); the folds give every run its own nnU-Net results folder,
    and the validation cases decide nnU-Net's checkpoint_best.pth. One validation case lets a single clot decide
    that choice (benchmarks/results/pilots/up_validation_split)."""
    ordered = sorted(cases)
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if validation_cases < 1:
        raise ValueError(f"validation_cases must be >= 1, got {validation_cases}")
    if len(ordered) <= validation_cases:
        raise ValueError(f"need more than {validation_cases} training case(s) to validate on {validation_cases} and "
                         f"train on the rest, got {len(ordered)}")
    validation = ordered[::len(ordered) // validation_cases][:validation_cases]
    return [{"train": [c for c in ordered if c not in validation], "val": validation} for _ in range(runs)]


def run_fold(run: int) -> int:
    """Run k (1-based) trains and predicts with fold k-1."""
    if run < 1:
        raise ValueError(f"runs are numbered from 1, got {run}")
    return run - 1
