"""Clot post-processing of a folder of nnU-Net predictions: every case through one chain of steps
(`nnunet_ext.postprocessing.clot`), written as a new folder (all cases, or nothing on error)."""
import os
from typing import Set

import numpy as np
import SimpleITK as sitk

from nnunet_ext.data.nifti import geometry_mismatch, read_image_checked, write_image_verified
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.postprocessing.clot import apply_chain, needed_inputs
from nnunet_ext.provenance import provenance


def check_label_present(found: Set[int], label: int, cases: int) -> None:
    """A label that no prediction holds (`found`: the labels of all of them) while they hold other foreground labels
    is the wrong label: the chain would change nothing, silently. (Predictions without any foreground are fine:
    there is nothing to process.)"""
    if label not in found and found - {0}:
        raise ValueError(f"label {label} is in none of the {cases} predictions, which hold label(s) "
                         f"{', '.join(map(str, sorted(found - {0})))}: choose one with --label")


def postprocess_folder(prediction_folder: str, output_folder: str, steps, lesion_folder: str = None, label: int = 1,
                       file_ending: str = ".nii.gz", distance_units: str = "voxels", command: str = "") -> int:
    if os.path.abspath(prediction_folder) == os.path.abspath(output_folder):
        raise ValueError("the output folder must differ from the input folder (the input is never overwritten)")
    if os.path.exists(output_folder):
        raise FileExistsError(f"{output_folder} exists")
    cases = sorted(f[:-len(file_ending)] for f in os.listdir(prediction_folder) if f.endswith(file_ending))
    if not cases:
        raise ValueError(f"no *{file_ending} predictions in {prediction_folder}")
    needs = needed_inputs(steps)
    if "lesion" in needs and lesion_folder is None:
        raise ValueError("step 'lesion_distance' needs --lesions (a folder of predicted lesion masks)")
    problems = []
    for case in cases:
        if "probabilities" in needs and not os.path.isfile(os.path.join(prediction_folder, case + ".npz")):
            problems.append(f"{case}: no {case}.npz probabilities (predict with --save_probabilities)")
        if "lesion" in needs and not os.path.isfile(os.path.join(lesion_folder, case + file_ending)):
            problems.append(f"{case}: no lesion prediction {case}{file_ending} in {lesion_folder}")
    if problems:
        raise ValueError("cannot post-process:\n  " + "\n  ".join(problems[:20]))

    parent, name = os.path.split(os.path.abspath(output_folder))
    labels_found: Set[int] = set()
    with staged_dataset_folder(parent, name) as staging:  # an error below removes the staging folder
        for case in cases:
            image = read_image_checked(os.path.join(prediction_folder, case + file_ending))
            segmentation = sitk.GetArrayFromImage(image)
            labels_found.update(int(v) for v in np.unique(segmentation))
            probabilities = lesion = None
            if "probabilities" in needs:
                stored = np.load(os.path.join(prediction_folder, case + ".npz"))["probabilities"]
                if stored.shape[1:] != segmentation.shape or label >= stored.shape[0]:
                    raise ValueError(f"{case}: probabilities of shape {stored.shape} do not fit the segmentation "
                                     f"{segmentation.shape} and label {label}")
                probabilities = stored[label].astype(np.float32)
            if "lesion" in needs:
                lesion_image = read_image_checked(os.path.join(lesion_folder, case + file_ending))
                mismatch = geometry_mismatch(image, lesion_image)
                if mismatch:
                    raise ValueError(f"{case}: lesion prediction {mismatch} of the clot prediction")
                lesion = sitk.GetArrayFromImage(lesion_image) > 0
            kept = apply_chain(segmentation == label, steps, probabilities, lesion,
                               tuple(reversed(image.GetSpacing())), distance_units)
            result = np.where(segmentation == label, 0, segmentation)
            result[kept] = label
            output = sitk.GetImageFromArray(result.astype(segmentation.dtype))
            output.CopyInformation(image)
            write_image_verified(output, os.path.join(staging, case + file_ending))
        check_label_present(labels_found, label, len(cases))
        write_json(os.path.join(staging, "postprocessing.json"),
                   {"steps": [list(s) for s in steps], "label": label, "lesions": lesion_folder,
                    "distance_units": distance_units, "input": os.path.abspath(prediction_folder),
                    "provenance": provenance(command=command)})
    return len(cases)
