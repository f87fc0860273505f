"""The models of Tables 5-7 and their predictions: the clot cohort and its datasets, the plans of each network, the
trainings (run k: fold k-1, seed profile.seed + k-1; a fine-tune after the model it starts from) and the
predictions on the test sets, all through the stock nnU-Net commands and ours (experiments.workspace).

Layout of <workdir> (it may be shared with the stroke tables: other dataset ids):
  nnUNet_raw / nnUNet_preprocessed / nnUNet_results   530 the clot cohort, 531 its A+B training set (center C
                                                      held out), 532 the same images (DWI) with lesion labels
  clot/inputs/<set>[_DWI], clot/references/<what>_<set>  test images and labels of A+B and of C (test_data.py)
  clot/predictions/<network>/run<k>/<set>_<phase>/   nnunet_ext_predict output (with .npz probabilities)
  commands.log, logs/<step>.log                       every command (in-process steps marked), and its output
Run k (1..profile.runs) trains fold k-1 of nnU-Net's splits (the same cases in every fold) with seed
profile.seed + k-1, so the stock commands and result folders hold every run side by side. A finished
training (checkpoint_final.pth) or prediction (.complete) is never redone; an interrupted training continues with --c.
"""
import functools
import json
import os
import time
from dataclasses import asdict
from typing import Callable, List, Optional

from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
from nnunet_ext.data.splits import write_json_files, write_splits
from nnunet_ext.experiments.clot.datasets import derive_lesion_dataset, run_fold, validation_split
from nnunet_ext.experiments.clot.profiles import (CHANNELS, CLOT_ID, DATASET_NAMES, DROPPABLE, LESION_ID,
                                                  NNUNET, PREDICTION_CHECKPOINT, SOURCE_ID, UNSEEN_CENTER,
                                                  ClotProfile, same_profile)
from nnunet_ext.experiments.clot.rows import Network
from nnunet_ext.experiments.clot.test_data import DWI_SWAPPED, ClotTestData
from nnunet_ext.experiments.datasets import derive_dataset
from nnunet_ext.experiments.workspace import TrainedModel, Workspace
from nnunet_ext.planning.templates import load_template

CONFIGURATION = "3d_fullres"


class ClotModels:
    def __init__(self, workdir: str, profile: ClotProfile, log: Callable[[str], None] = print):
        self.workdir = os.path.abspath(workdir)
        self.root = os.path.join(self.workdir, "clot")
        self.profile, self.log = profile, log
        # nnU-Net's validation after training is skipped: the rows are evaluated on the test cases instead;
        # dataset.json decides the droppable channels and the trainers' names the budget
        self.workspace = Workspace(self.workdir, {"NNUNET_EXT_FINAL_VALIDATION": "0"},
                                   unset=("NNUNET_EXT_DROPPABLE_CHANNELS", "NNUNET_EXT_SAVE_EVERY"))
        self.paths = self.workspace.paths
        self.test_data = ClotTestData(self.workspace, self.root, functools.partial(self.dataset, CLOT_ID),
                                      self.source_dataset)
        self._check_profile()

    def _check_profile(self) -> None:
        """One workdir, one profile: the datasets and models of another profile would be silently reused."""
        path = os.path.join(self.root, "profile.json")
        if os.path.isfile(path):
            with open(path) as f:
                stored = json.load(f)
            if not same_profile(stored, self.profile):
                raise ValueError(f"{self.workdir} holds the clot runs of profile {stored.get('name')!r} with other "
                                 f"settings; use another --workdir for profile {self.profile.name!r}")
            return
        write_json_files({path: asdict(self.profile)})

    # ---- datasets ------------------------------------------------------------------------------------------
    def source_dataset(self) -> str:
        existing = self.workspace.raw_dataset(SOURCE_ID)
        if existing:
            return existing
        with self.workspace.lock(f"dataset_{SOURCE_ID}"):
            return self.workspace.raw_dataset(SOURCE_ID) or self._write_source_dataset()

    def _write_source_dataset(self) -> str:
        spec = ClotCohortSpec(dataset_id=SOURCE_ID, name=DATASET_NAMES[SOURCE_ID], size=self.profile.size,
                              train_per_center=self.profile.train_per_center,
                              test_per_center=self.profile.test_per_center, seed=self.profile.seed,
                              preset=self.profile.preset)
        self.log(f"generating the synthetic clot cohort ({spec.folder_name})")
        self.workspace.note(f"write_clot_cohort({spec})")
        return write_clot_cohort(spec, self.paths["nnUNet_raw"], progress=False)

    def dataset(self, dataset_id: int) -> str:
        """Raw folder of the A+B clot dataset or of the lesion dataset, derived, planned, preprocessed, split (under
        the dataset's lock when anything is left to do)."""
        raw = self.workspace.raw_dataset(dataset_id)
        if raw is not None and self._prepared(raw):
            return raw
        with self.workspace.lock(f"dataset_{dataset_id}"):
            return self._dataset(dataset_id)

    def _prepared(self, raw: str) -> bool:
        preprocessed = self.workspace.preprocessed(raw)
        return all(os.path.isfile(os.path.join(preprocessed, f)) for f in ("nnUNetPlans.json", "splits_final.json"))

    def _dataset(self, dataset_id: int) -> str:
        raw = self.workspace.raw_dataset(dataset_id)
        if raw is None:
            source = self.source_dataset()
            if dataset_id == CLOT_ID:
                raw = derive_dataset(source, self.paths["nnUNet_raw"], CLOT_ID, DATASET_NAMES[CLOT_ID], CHANNELS,
                                     DROPPABLE, held_out_center=UNSEEN_CENTER)
            else:
                raw = derive_lesion_dataset(source, self.paths["nnUNet_raw"], LESION_ID, DATASET_NAMES[LESION_ID])
        preprocessed = self.workspace.preprocessed(raw)
        if not os.path.isfile(os.path.join(preprocessed, "nnUNetPlans.json")):
            self.log(f"planning and preprocessing {os.path.basename(raw)}")
            self.workspace.plan_and_preprocess(dataset_id, CONFIGURATION)
        splits = os.path.join(preprocessed, "splits_final.json")
        if not os.path.isfile(splits):
            cases = [f[:-len(".nii.gz")] for f in os.listdir(os.path.join(raw, "labelsTr")) if f.endswith(".nii.gz")]
            self.workspace.note(f"write {splits} ({self.profile.runs} identical folds, one per run, "
                                f"{self.profile.validation_cases} validation case(s))")
            write_splits(validation_split(cases, self.profile.runs, self.profile.validation_cases), splits)
        return raw

    def ensure_plans(self, network: Network) -> None:
        raw = self.dataset(network.dataset_id)
        folder = self.workspace.preprocessed(raw)
        if os.path.isfile(os.path.join(folder, f"{network.plans}.json")):
            return
        with self.workspace.lock(f"plans_{network.dataset_id}_{network.plans}"):
            if not os.path.isfile(os.path.join(folder, f"{network.plans}.json")):
                self._write_plans(network)

    def _write_plans(self, network: Network) -> None:
        if network.architecture == NNUNET:
            self.workspace.run(["nnunet_ext_plan_cpu", "-d", str(network.dataset_id)],
                               f"plans_cpu_{network.dataset_id}")
            return
        model = network.architecture
        height, width = load_template(self.profile.template)["patch_size"][1:]
        self.workspace.run(["nnunet_ext_plan_upattllstm", "-d", str(network.dataset_id), "-t", self.profile.template,
                          "--model", model, "--patch", str(network.slices), str(height), str(width),
                          "-o", network.plans], f"plans_{network.plans}")

    # ---- training ------------------------------------------------------------------------------------------
    def model(self, network: Network, run: int) -> TrainedModel:
        """The nnU-Net model of `network` in run `run` (fold run-1)."""
        return TrainedModel(network.dataset_id, network.dataset_name, network.trainer(self.profile), network.plans,
                            run_fold(run), CONFIGURATION)

    def fold_folder(self, network: Network, run: int) -> str:
        return self.workspace.fold_folder(self.model(network, run))

    def seed(self, run: int) -> int:
        return self.profile.seed + run_fold(run)

    def pretrained_checkpoint(self, network: Network, run: int) -> Optional[str]:
        """The checkpoint a fine-tune starts from: the paper fine-tunes "the best UpAttLLSTM", its checkpoint at the
        best validation pseudo Dice (None for a network trained from scratch)."""
        before = network.pretrained_from(self.profile)
        return None if before is None else os.path.join(self.fold_folder(before, run), PREDICTION_CHECKPOINT)

    def train_command(self, network: Network, run: int) -> List[str]:
        return Workspace.train_command(self.model(network, run), self.profile.device,
                                       self.pretrained_checkpoint(network, run))

    def train(self, network: Network, run: int) -> str:
        """Train `network` for run `run` (first the model it is fine-tuned from); returns its fold folder."""
        model = self.model(network, run)
        if self.workspace.is_trained(model):
            return self.workspace.fold_folder(model)
        before = network.pretrained_from(self.profile)
        if before is not None:
            self.train(before, run)
        self.ensure_plans(network)
        self.log(f"training {network.key}, run {run}: {model.trainer} with {network.plans}")
        started = time.time()
        folder = self.workspace.train(model, f"train_{network.key}_run{run}", self.profile.device,
                                      self.pretrained_checkpoint(network, run),
                                      {"NNUNET_EXT_SEED": str(self.seed(run)), "nnUNet_n_proc_DA": "1"})
        self.log(f"  trained in {time.time() - started:.0f} s")
        return folder

    # ---- prediction, post-processing, evaluation ------------------------------------------------------------
    def prediction_folder(self, network: Network, test_set: str, phase: str, run: int) -> str:
        return os.path.join(self.root, "predictions", network.key, f"run{run}", f"{test_set}_{phase}")

    def predict_command(self, network: Network, test_set: str, phase: str, run: int) -> List[str]:
        lesion = network.target == "lesion"
        inputs = os.path.join(self.root, "inputs", f"{test_set}_DWI" if lesion else
                              f"{test_set}_{DWI_SWAPPED}" if phase == DWI_SWAPPED else test_set)
        options = [] if lesion else ["--save_probabilities"]  # for the Thr step
        if phase == "missing":
            options += ["--missing", DROPPABLE]
        return Workspace.predict_command(self.model(network, run), inputs,
                                         self.prediction_folder(network, test_set, phase, run), self.profile.device,
                                         PREDICTION_CHECKPOINT, options)

    def predict(self, network: Network, test_set: str, phase: str, run: int) -> str:
        """The prediction folder of `network` (run `run`) on one test set and phase, trained and predicted if
        needed."""
        folder = self.prediction_folder(network, test_set, phase, run)
        if self.workspace.is_predicted(folder):
            return folder
        self.train(network, run)

        def write_inputs():
            if phase == DWI_SWAPPED:
                self.test_data.swapped_dwi_inputs(test_set)
            else:
                self.test_data.test_inputs(test_set, ("DWI",) if network.target == "lesion" else CHANNELS)
        return self.workspace.predict(self.predict_command(network, test_set, phase, run),
                                      f"predict_{network.key}_run{run}_{test_set}_{phase}", write_inputs)
