"""Dice of an nnU-Net prediction folder against a reference folder, per case and per center."""
import os
from typing import Dict, Mapping, Optional

import numpy as np
import SimpleITK as sitk

from nnunet_ext.evaluation.metrics import dice


def dice_per_case(prediction_folder: str, reference_folder: str, file_ending: str = ".nii.gz",
                  label: int = 1) -> Dict[str, float]:
    """Dice of `label` for every reference case; a missing prediction or a geometry mismatch is an error."""
    references = sorted(f for f in os.listdir(reference_folder) if f.endswith(file_ending))
    if not references:
        raise ValueError(f"no *{file_ending} reference labels in {reference_folder}")
    missing = [f for f in references if not os.path.isfile(os.path.join(prediction_folder, f))]
    if missing:
        raise ValueError(f"{len(missing)} prediction(s) missing in {prediction_folder}: {', '.join(missing[:5])}")
    scores = {}
    for name in references:
        reference = sitk.ReadImage(os.path.join(reference_folder, name))
        prediction = sitk.ReadImage(os.path.join(prediction_folder, name))
        if not np.allclose(reference.GetSpacing(), prediction.GetSpacing(), rtol=1e-4):
            raise ValueError(f"{name}: prediction spacing {prediction.GetSpacing()} differs from the reference's "
                             f"{reference.GetSpacing()}")
        scores[name[:-len(file_ending)]] = dice(sitk.GetArrayViewFromImage(prediction) == label,
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
