"""Cross-validation splits from a case->center map, as nnU-Net's splits_final.json: in-domain and leave-center-out.

* In-domain: k folds stratified by center. Each center's cases are shuffled (seeded) and dealt to the folds
  in turn, the dealing carrying on from center to center, so each center's count per fold differs by at most
  one and so does the folds' total size.
* Leave-center-out: the named center(s) are held out as an unseen test set (test_cases.json); the other
  centers are split as above. nnU-Net never trains or validates on cases absent from splits_final.json.

splits_final.json is nnU-Net's format: a list of {"train": [...], "val": [...]}, one per fold (use `-f i`).
"""
import json
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_ext.data.staging import write_files_together

Splits = List[Dict[str, List[str]]]


def stratified_kfold(case_centers: Mapping[str, str], k: int = 5, seed: int = 12345) -> Splits:
    """k folds, every center spread over the folds as evenly as possible; cases sorted within each list."""
    if not case_centers:
        raise ValueError("the case->center map is empty: nothing to split")
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (a fold needs training and validation cases), got {k!r}")
    if k > len(case_centers):
        raise ValueError(f"k = {k} folds need at least {k} cases, got {len(case_centers)}")
    rng = np.random.default_rng(seed)
    folds: List[List[str]] = [[] for _ in range(k)]
    position = 0
    for center in sorted(set(case_centers.values())):
        cases = sorted(c for c, m in case_centers.items() if m == center)
        for case in rng.permutation(cases):
            folds[position % k].append(str(case))
            position += 1
    everything = sorted(case_centers)
    return [{"train": [c for c in everything if c not in validation], "val": sorted(validation)}
            for validation in map(set, folds)]


def leave_center_out(case_centers: Mapping[str, str], held_out: Sequence[str], k: int = 5,
                     seed: int = 12345) -> Tuple[Splits, List[str]]:
    """(k folds over the remaining centers, sorted test cases of the held-out centers)."""
    known = sorted(set(case_centers.values()))
    if not held_out:
        raise ValueError(f"name at least one center to hold out; centers are {', '.join(known)}")
    unknown = [c for c in held_out if c not in known]
    if unknown:
        raise ValueError(f"unknown center {unknown[0]!r}; the case->center map has {', '.join(known)}")
    remaining = {c: m for c, m in case_centers.items() if m not in held_out}
    if not remaining:
        raise ValueError(f"holding out {', '.join(held_out)} leaves no case to train on")
    return stratified_kfold(remaining, k, seed), sorted(c for c, m in case_centers.items() if m in held_out)


def restrict_to(case_centers: Mapping[str, str], cases: Sequence[str]) -> Dict[str, str]:
    """The map limited to `cases` (e.g. those in labelsTr); every one of them must have a center."""
    missing = sorted(set(cases) - set(case_centers))
    if missing:
        raise ValueError(f"{len(missing)} case(s) have no center in the case->center map: {', '.join(missing[:10])}")
    return {c: case_centers[c] for c in cases}


def read_case_map(path: str, group_key: Optional[str] = None) -> Dict[str, str]:
    """A case -> center map from a JSON file (e.g. case_centers.json), or with `group_key` a case -> record map
    grouped by one field of each record (e.g. the clot cohort's occlusions.json with "occlusion").

    Every error names the file: unreadable, not JSON, not an object, a record where a name belongs."""
    try:
        with open(path) as f:
            content = json.load(f)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object mapping case -> center, got a {type(content).__name__}")
    if group_key is not None:
        missing = [case for case, record in content.items() if not isinstance(record, dict) or group_key not in record]
        if missing:
            raise ValueError(f"{path}: no field {group_key!r} for case(s) {', '.join(missing[:5])}")
        content = {case: record[group_key] for case, record in content.items()}
    for case, value in content.items():
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            continue
        hint = ""
        if isinstance(value, dict) and group_key is None:
            hint = (f"; the file holds a record per case: name the field to group by with --group-key "
                    f"(fields: {', '.join(sorted(map(str, value)))})")
        raise ValueError(f"{path}: case {case!r} maps to {json.dumps(value)[:80]}, not a center name{hint}")
    return {case: str(value) for case, value in content.items()}


def write_json_files(files: Mapping[str, object]) -> None:
    """Write each {path: content} as JSON, as a set: all complete, or none changed on error."""
    write_files_together({path: json.dumps(content, indent=4) for path, content in files.items()})


def validation_counts(splits: Splits, case_centers: Mapping[str, str]) -> List[Dict[str, int]]:
    """Validation cases per center in every fold (0 included), for a printout and for tests."""
    centers = sorted({case_centers[c] for fold in splits for c in fold["val"]})
    return [{m: sum(case_centers[c] == m for c in fold["val"]) for m in centers} for fold in splits]


def write_splits(splits: Splits, splits_path: str, test_cases: Optional[Sequence[str]] = None,
                 held_out: Sequence[str] = (), provenance: Optional[Mapping] = None) -> Dict[str, str]:
    """splits_final.json at `splits_path`, and test_cases.json beside it for a leave-center-out split."""
    files = {splits_path: splits}
    if test_cases is not None:
        test_path = os.path.join(os.path.dirname(os.path.abspath(splits_path)), "test_cases.json")
        files[test_path] = {"held_out_centers": list(held_out), "test_cases": list(test_cases),
                            "provenance": dict(provenance or {})}
    write_json_files(files)
    return {os.path.basename(p): p for p in files}
