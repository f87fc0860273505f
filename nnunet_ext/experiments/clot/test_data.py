"""The test side of Tables 5-7: the test cases of each set, their images as nnunet_ext_predict reads them (some
channels only, or DWI swapped between cases) and their reference labels, each staged once as a complete folder
under <root>/inputs and <root>/references."""
import json
import os
from typing import Callable, Dict, List, Sequence

from nnunet_ext.data.clot_cohort import LESION_LABEL_FOLDERS, OCCLUSION_FILE
from nnunet_ext.data.nifti import read_image_checked, resample_onto, write_image_verified
from nnunet_ext.data.staging import staged_dataset_folder
from nnunet_ext.experiments.clot.datasets import link_or_copy
from nnunet_ext.experiments.clot.profiles import CHANNELS, TEST_SETS
from nnunet_ext.experiments.workspace import Workspace

DWI_SWAPPED = "dwi_swapped"  # the phase of the DWI-swap check's predictions


class ClotTestData:
    """`clot_dataset` and `source_dataset` return the raw folders of the A+B training set (its imagesTs are the
    test images) and of the cohort (its labels), preparing them if needed."""

    def __init__(self, workspace: Workspace, root: str, clot_dataset: Callable[[], str],
                 source_dataset: Callable[[], str]):
        self.workspace, self.root = workspace, root
        self.clot_dataset, self.source_dataset = clot_dataset, source_dataset

    def case_centers(self) -> Dict[str, str]:
        with open(os.path.join(self.clot_dataset(), "case_centers.json")) as f:
            return json.load(f)

    def test_cases(self, test_set: str) -> List[str]:
        raw = self.clot_dataset()
        centers = self.case_centers()
        cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(raw, "labelsTs")) if f.endswith(".nii.gz"))
        return [c for c in cases if centers[c] in TEST_SETS[test_set]]

    def test_inputs(self, test_set: str, channels: Sequence[str] = CHANNELS) -> str:
        """A folder with the test images of one test set, `channels` only (renumbered), for nnunet_ext_predict."""
        name = test_set if tuple(channels) == CHANNELS else f"{test_set}_{'_'.join(channels)}"
        folder = os.path.join(self.root, "inputs", name)
        if os.path.isdir(folder):
            return folder
        raw = self.clot_dataset()
        with staged_dataset_folder(os.path.dirname(folder), name) as staging:
            for case in self.test_cases(test_set):
                for new_index, channel in enumerate(channels):
                    link_or_copy(os.path.join(raw, "imagesTs", f"{case}_{CHANNELS.index(channel):04d}.nii.gz"),
                                  os.path.join(staging, f"{case}_{new_index:04d}.nii.gz"))
        return folder

    def swapped_dwi_inputs(self, test_set: str) -> str:
        """The test images of one set with each case's DWI taken from the next case of the set (sorted, cyclic),
        resampled onto the case's grid; SWAN and PHASE stay the case's own. For the check that the attention models
        use DWI at all: if they do, their predictions change."""
        name = f"{test_set}_{DWI_SWAPPED}"
        folder = os.path.join(self.root, "inputs", name)
        if os.path.isdir(folder):
            return folder
        raw = self.clot_dataset()
        cases = self.test_cases(test_set)
        if len(cases) < 2:
            raise ValueError(f"swapping DWI needs 2 or more test cases in {test_set}, got {len(cases)}")

        def image(case: str, channel: str) -> str:
            return os.path.join(raw, "imagesTs", f"{case}_{CHANNELS.index(channel):04d}.nii.gz")

        self.workspace.note(f"{folder}: DWI of case k+1 (resampled onto case k) with case k's SWAN, PHASE")
        with staged_dataset_folder(os.path.dirname(folder), name) as staging:
            for case, donor in zip(cases, cases[1:] + cases[:1]):
                own = read_image_checked(image(case, "DWI"))
                write_image_verified(resample_onto(read_image_checked(image(donor, "DWI")), own),
                                     os.path.join(staging, f"{case}_{CHANNELS.index('DWI'):04d}.nii.gz"))
                for channel in CHANNELS[1:]:
                    link_or_copy(image(case, channel),
                                  os.path.join(staging, f"{case}_{CHANNELS.index(channel):04d}.nii.gz"))
        return folder

    def references(self, what: str, test_set: str) -> str:
        """Reference labels of one test set: what = 'clot' or 'lesion'."""
        name = f"{what}_{test_set}"
        folder = os.path.join(self.root, "references", name)
        if os.path.isdir(folder):
            return folder
        source = os.path.join(self.source_dataset(), "labelsTs" if what == "clot" else LESION_LABEL_FOLDERS["Ts"])
        with staged_dataset_folder(os.path.dirname(folder), name) as staging:
            for case in self.test_cases(test_set):
                link_or_copy(os.path.join(source, f"{case}.nii.gz"), os.path.join(staging, f"{case}.nii.gz"))
        return folder

    def occlusion_groups(self) -> Dict[str, str]:
        with open(os.path.join(self.source_dataset(), OCCLUSION_FILE)) as f:
            return {case: record["occlusion"] for case, record in json.load(f).items()}
