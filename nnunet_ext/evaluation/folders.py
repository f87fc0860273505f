"""Dice of an nnU-Net prediction folder against a reference folder, per case and per center."""
import os
from typing import Dict, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from nnunet_ext.data.nifti import geometry_mismatch
from nnunet_ext.evaluation.evaluate import find_cases, read_label_image
from nnunet_ext.evaluation.metrics import dice


def dice_per_case(prediction_folder: str, reference_folder: str, file_ending: str = ".nii.gz",
                  label: int = 1) -> Dict[str, float]:
    """Dice of `label` for every reference case; a missing prediction or a geometry mismatch is an error.
    (The quick score the demo and the experiment harness need; `evaluate.evaluate_folders` has the rest.)"""
    scores = {}
    for case in find_cases(prediction_folder, reference_folder, file_ending):
        reference = read_label_image(case, "reference", os.path.join(reference_folder, case + file_ending))
        prediction = read_label_image(case, "prediction", os.path.join(prediction_folder, case + file_ending))
        mismatch = geometry_mismatch(reference, prediction)
        if mismatch:
            raise ValueError(f"{case}: prediction {mismatch} of the reference")
        scores[case] = dice(sitk.GetArrayViewFromImage(prediction) == label,
                            sitk.GetArrayViewFromImage(reference) == label)
    return scores


def summarize_by_center(scores: Mapping[str, float], case_centers: Optional[Mapping[str, str]] = None) -> Dict:
    """Mean and std of the scores per center (if a case->center map is given) and overall."""
    groups: Dict[str, list] = {}
    for case, value in scores.items():
        if case_centers is not None:
            if case not in case_centers:
                raise ValueError(f"case {case!r} is not in the case->center map")
            groups.setdefault(case_centers[case], []).append(value)
    groups["all"] = list(scores.values())
    return {name: {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} for name, v in groups.items()}
