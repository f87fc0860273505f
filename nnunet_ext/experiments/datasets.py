"""Datasets for an experiment, derived from one source raw dataset (synthetic or converted real data).

A derived dataset keeps a subset of the channels (Table 2 uses DWI + ADC) and can hold a center out of
training while keeping its test cases (Table 3's unseen center). It is written atomically, like the cohort.
"""
import json
import os
import re
import shutil
from typing import Dict, Optional, Sequence

from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.dropout.config import channel_names_from_dataset_json


def derive_dataset(source: str, raw_root: str, dataset_id: int, name: str, channels: Sequence[str],
                   droppable: str, held_out_center: Optional[str] = None) -> str:
    """Write raw_root/DatasetXXX_name from `source` (imagesTr/labelsTr/imagesTs/labelsTs + case_centers.json).

    channels: names kept, in this order; droppable: the channel written as dataset.json droppable_channels;
    held_out_center: its training cases are left out (its test cases stay).
    """
    with open(os.path.join(source, "dataset.json")) as f:
        source_json = json.load(f)
    centers_path = os.path.join(source, "case_centers.json")
    if not os.path.isfile(centers_path):
        raise ValueError(f"{source} has no case_centers.json (case -> center map)")
    with open(centers_path) as f:
        centers: Dict[str, str] = json.load(f)
    names = channel_names_from_dataset_json(source_json)
    missing = [c for c in channels if c not in names]
    if missing:
        raise ValueError(f"channel(s) {', '.join(missing)} not in {source} (it has {', '.join(names)})")
    if droppable not in channels:
        raise ValueError(f"droppable channel {droppable!r} is not among the kept channels {list(channels)}")
    if held_out_center is not None and held_out_center not in centers.values():
        raise ValueError(f"center {held_out_center!r} not in {source} (centers: {sorted(set(centers.values()))})")
    for folder in ("imagesTs", "labelsTs"):
        if not os.path.isdir(os.path.join(source, folder)):
            raise ValueError(f"{source} has no {folder}: an experiment needs held-out test cases")

    ending = source_json["file_ending"]
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    with staged_dataset_folder(raw_root, folder_name) as staging:
        kept_cases = {}
        for split in ("Tr", "Ts"):
            os.makedirs(os.path.join(staging, f"images{split}"))
            os.makedirs(os.path.join(staging, f"labels{split}"))
            for label_file in sorted(os.listdir(os.path.join(source, f"labels{split}"))):
                if not label_file.endswith(ending):
                    continue
                case = label_file[:-len(ending)]
                if split == "Tr" and held_out_center is not None and centers.get(case) == held_out_center:
                    continue
                kept_cases[case] = centers[case]
                shutil.copyfile(os.path.join(source, f"labels{split}", label_file),
                                os.path.join(staging, f"labels{split}", label_file))
                for new_index, channel in enumerate(channels):
                    stem = os.path.join(source, f"images{split}", f"{case}_{names.index(channel):04d}")
                    target = os.path.join(staging, f"images{split}", f"{case}_{new_index:04d}")
                    shutil.copyfile(stem + ending, target + ending)
                    if os.path.isfile(stem + ".json"):  # a BIDS-style sidecar (the DWI's b) travels with its image
                        shutil.copyfile(stem + ".json", target + ".json")
        dataset_json = {**source_json, "channel_names": {str(i): c for i, c in enumerate(channels)},
                        "droppable_channels": [droppable], "name": name,
                        "numTraining": len(os.listdir(os.path.join(staging, "labelsTr"))),
                        "derived_from": {"source": source, "channels": list(channels),
                                         "held_out_center": held_out_center}}
        write_json(os.path.join(staging, "dataset.json"), dataset_json)
        write_json(os.path.join(staging, "case_centers.json"), kept_cases)
    return os.path.join(raw_root, folder_name)


def dataset_folder(raw_root: str, dataset_id: int) -> Optional[str]:
    pattern = re.compile(rf"^Dataset{dataset_id:03d}_")
    matches = [d for d in os.listdir(raw_root) if pattern.match(d)] if os.path.isdir(raw_root) else []
    return os.path.join(raw_root, matches[0]) if matches else None
