"""The harness of the thrombus Tables 5-7: cohort, datasets, plans, trainings, predictions, post-processing and
evaluation, through the stock nnU-Net commands and ours.

Layout of <workdir> (it may be shared with the stroke tables: other dataset ids):
  nnUNet_raw / nnUNet_preprocessed / nnUNet_results   530 the clot cohort, 531 its A+B training set (center C
                                                      held out), 532 the same images (DWI) with lesion labels
  clot/inputs/<set>[_DWI], clot/references/<what>_<set>  test images and labels of A+B and of C
  clot/predictions/<network>/run<k>/<set>_<phase>/   nnunet_ext_predict output (with .npz probabilities)
  clot/postprocessed/<network>/run<k>/<set>_<phase>__<chain>/
  clot/results/run<k>/<row key>.json                 one evaluated row of run k; shared by the tables that have it
  clot/results/run<k>/dwi_swapped__<network>.json    the DWI-swap check of an attention model (inputs/AB_dwi_swapped)
  commands.log, logs/<step>.log                       every command (in-process steps marked), and its output
Run k (1..profile.runs) trains fold k-1 of nnU-Net's splits (the same cases in every fold) with seed
profile.seed + k-1, so the stock commands and result folders hold every run side by side.
Resumable per (row, run): a finished row, prediction (.complete), post-processing folder or training
(checkpoint_final.pth) is never redone; an interrupted training continues with --c.
"""
import json
import os
import shlex
import shutil
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_ext.data.nifti import read_image_checked, resample_onto, write_image_verified
from nnunet_ext.data.clot_cohort import LESION_LABEL_FOLDERS, OCCLUSION_FILE, ClotCohortSpec, write_clot_cohort
from nnunet_ext.data.splits import write_json_files
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.evaluation.evaluate import EvaluationSettings, evaluate_folders, summarize
from nnunet_ext.evaluation.metrics import dice
from nnunet_ext.networks.clot_networks import ATTENTION_MODELS
from nnunet_ext.experiments.clot_tables import (CHANNELS, CLOT_ID, DATASET_NAMES, DROPPABLE, GRADUAL, LESION_ID,
                                                LESION_NETWORK, NNUNET, PREDICTION_CHECKPOINT, SOURCE_ID, STEPS,
                                                TEST_SETS, THRESHOLD,
                                                UNSEEN_CENTER, ClotProfile, Network, Row, row_networks,
                                                table_metrics, table_rows)
from nnunet_ext.planning.templates import load_template
from nnunet_ext.experiments.datasets import dataset_folder, derive_dataset
from nnunet_ext.experiments.jobs import Task
from nnunet_ext.experiments.locks import run_lock
from nnunet_ext.experiments.records import append_command_log, run_logged
from nnunet_ext.paths import nnunet_environment, nnunet_folders
from nnunet_ext.postprocessing.clot import parse_step
from nnunet_ext.postprocessing.folders import postprocess_folder
from nnunet_ext.provenance import provenance

CONFIGURATION = "3d_fullres"
DWI_SWAPPED = "dwi_swapped"  # the phase of the DWI-swap check's predictions


def dwi_swap_networks(rows: Sequence[Row]) -> List[Network]:
    """The attention models among `rows`' raw A+B rows with PHASE present: the ones the DWI-swap check runs on."""
    found = {row.network: None for row in rows if row.network.architecture in ATTENTION_MODELS and not row.chain
             and row.test_set == "AB" and row.phase == "present"}
    return list(found)


def _link_or_copy(source: str, target: str) -> None:
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


def validation_split(cases: Sequence[str], runs: int = 1) -> List[Dict[str, List[str]]]:
    """One fold per run, every fold the same: one validation case, the rest trained on. nnU-Net's 5-fold split
    would keep a fifth of a small cohort out of training, and the harness evaluates on the held-out test cases
    itself (the final validation is skipped); the folds only give every run its own nnU-Net results folder."""
    ordered = sorted(cases)
    if len(ordered) < 2:
        raise ValueError(f"need at least 2 training cases for a training and a validation case, got {len(ordered)}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    return [{"train": ordered[1:], "val": ordered[:1]} for _ in range(runs)]


def run_fold(run: int) -> int:
    """Run k (1-based) trains and predicts with fold k-1."""
    if run < 1:
        raise ValueError(f"runs are numbered from 1, got {run}")
    return run - 1


class ClotHarness:
    def __init__(self, workdir: str, profile: ClotProfile, log: Callable[[str], None] = print, command: str = ""):
        self.workdir = os.path.abspath(workdir)
        self.root = os.path.join(self.workdir, "clot")
        self.profile, self.log, self.command = profile, log, command
        self.paths = nnunet_folders(self.workdir)
        # nnU-Net's validation after training is skipped: the rows are evaluated on the test cases instead
        self.env = nnunet_environment(**self.paths, nnUNet_compile="false", NNUNET_EXT_FINAL_VALIDATION="0",
                                      NNUNET_EXT_ITERATIONS_PER_EPOCH=str(profile.iterations_per_epoch),
                                      NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH=str(profile.val_iterations_per_epoch))
        for variable in ("NNUNET_EXT_DROPPABLE_CHANNELS", "NNUNET_EXT_SAVE_EVERY"):
            self.env.pop(variable, None)  # dataset.json decides; the profile fixes the budget
        os.makedirs(os.path.join(self.workdir, "logs"), exist_ok=True)
        self._check_profile()

    def _check_profile(self) -> None:
        """One workdir, one profile: the datasets and models of another profile would be silently reused."""
        path = os.path.join(self.root, "profile.json")
        if os.path.isfile(path):
            with open(path) as f:
                stored = json.load(f)
            if stored != json.loads(json.dumps(asdict(self.profile))):
                raise ValueError(f"{self.workdir} holds the clot runs of profile {stored.get('name')!r} with other "
                                 f"settings; use another --workdir for profile {self.profile.name!r}")
            return
        os.makedirs(self.root, exist_ok=True)
        with open(path, "w") as f:
            json.dump(asdict(self.profile), f, indent=2)

    # ---- commands ------------------------------------------------------------------------------------------
    def _log_command(self, text: str) -> None:
        append_command_log(self.workdir, text)

    def run_command(self, command: List[str], log_name: str, extra_env: Optional[Dict[str, str]] = None) -> None:
        run_logged(command, self.workdir, log_name, self.env, extra_env)

    # ---- datasets ------------------------------------------------------------------------------------------
    def lock(self, name: str):
        """A lock file <workdir>/locks/<name>.lock (nnunet_ext.experiments.locks): two harnesses or jobs on one
        workdir never do the same step at once; the second stops naming the first."""
        return run_lock(os.path.join(self.workdir, "locks", f"{name}.lock"))

    def source_dataset(self) -> str:
        existing = dataset_folder(self.paths["nnUNet_raw"], SOURCE_ID)
        if existing:
            return existing
        with self.lock(f"dataset_{SOURCE_ID}"):
            return dataset_folder(self.paths["nnUNet_raw"], SOURCE_ID) or self._write_source_dataset()

    def _write_source_dataset(self) -> str:
        spec = ClotCohortSpec(dataset_id=SOURCE_ID, name=DATASET_NAMES[SOURCE_ID], size=self.profile.size,
                              train_per_center=self.profile.train_per_center,
                              test_per_center=self.profile.test_per_center, seed=self.profile.seed,
                              preset=self.profile.preset)
        self.log(f"generating the synthetic clot cohort ({spec.folder_name})")
        self._log_command(f"[in process] write_clot_cohort({spec})")
        return write_clot_cohort(spec, self.paths["nnUNet_raw"], progress=False)

    def dataset(self, dataset_id: int) -> str:
        """Raw folder of the A+B clot dataset or of the lesion dataset, derived, planned, preprocessed, split (under
        the dataset's lock when anything is left to do)."""
        raw = dataset_folder(self.paths["nnUNet_raw"], dataset_id)
        if raw is not None and self._prepared(raw):
            return raw
        with self.lock(f"dataset_{dataset_id}"):
            return self._dataset(dataset_id)

    def _prepared(self, raw: str) -> bool:
        preprocessed = os.path.join(self.paths["nnUNet_preprocessed"], os.path.basename(raw))
        return all(os.path.isfile(os.path.join(preprocessed, f)) for f in ("nnUNetPlans.json", "splits_final.json"))

    def _dataset(self, dataset_id: int) -> str:
        raw = dataset_folder(self.paths["nnUNet_raw"], dataset_id)
        if raw is None:
            source = self.source_dataset()
            if dataset_id == CLOT_ID:
                raw = derive_dataset(source, self.paths["nnUNet_raw"], CLOT_ID, DATASET_NAMES[CLOT_ID], CHANNELS,
                                     DROPPABLE, held_out_center=UNSEEN_CENTER)
            else:
                raw = derive_lesion_dataset(source, self.paths["nnUNet_raw"], LESION_ID, DATASET_NAMES[LESION_ID])
        preprocessed = os.path.join(self.paths["nnUNet_preprocessed"], os.path.basename(raw))
        if not os.path.isfile(os.path.join(preprocessed, "nnUNetPlans.json")):
            self.log(f"planning and preprocessing {os.path.basename(raw)}")
            # the planner calls torch.set_num_threads(nnUNet_n_proc_DA), which must be >= 1
            self.run_command(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", CONFIGURATION, "-np", "2"],
                             f"plan_{dataset_id}", {"nnUNet_n_proc_DA": "2"})
        splits = os.path.join(preprocessed, "splits_final.json")
        if not os.path.isfile(splits):
            cases = [f[:-len(".nii.gz")] for f in os.listdir(os.path.join(raw, "labelsTr")) if f.endswith(".nii.gz")]
            self._log_command(f"[in process] write {splits} ({self.profile.runs} identical folds, one per run, one "
                              "validation case)")
            write_json(splits, validation_split(cases, self.profile.runs))
        return raw

    def ensure_plans(self, network: Network) -> None:
        raw = self.dataset(network.dataset_id)
        folder = os.path.join(self.paths["nnUNet_preprocessed"], os.path.basename(raw))
        if os.path.isfile(os.path.join(folder, f"{network.plans}.json")):
            return
        with self.lock(f"plans_{network.dataset_id}_{network.plans}"):
            if not os.path.isfile(os.path.join(folder, f"{network.plans}.json")):
                self._write_plans(network)

    def _write_plans(self, network: Network) -> None:
        if network.architecture == NNUNET:
            self.run_command(["nnunet_ext_plan_cpu", "-d", str(network.dataset_id)], f"plans_cpu_{network.dataset_id}")
            return
        model = "UpAttLLSTM" if network.architecture == GRADUAL else network.architecture
        height, width = load_template(self.profile.template)["patch_size"][1:]
        self.run_command(["nnunet_ext_plan_upattllstm", "-d", str(network.dataset_id), "-t", self.profile.template,
                          "--model", model, "--patch", str(network.slices), str(height), str(width),
                          "-o", network.plans], f"plans_{network.plans}")

    # ---- training ------------------------------------------------------------------------------------------
    def fold_folder(self, network: Network, run: int) -> str:
        return os.path.join(self.paths["nnUNet_results"], network.dataset_name,
                            f"{network.trainer(self.profile)}__{network.plans}__{CONFIGURATION}",
                            f"fold_{run_fold(run)}")

    def seed(self, run: int) -> int:
        return self.profile.seed + run_fold(run)

    def train_command(self, network: Network, run: int) -> List[str]:
        command = ["nnUNetv2_train", str(network.dataset_id), CONFIGURATION, str(run_fold(run)), "-p", network.plans,
                   "-tr", network.trainer(self.profile), "-device", self.profile.device]
        before = network.pretrained_from(self.profile)
        if before is not None:
            # the paper fine-tunes "the best UpAttLLSTM": its checkpoint at the best validation pseudo Dice
            command += ["-pretrained_weights", os.path.join(self.fold_folder(before, run), PREDICTION_CHECKPOINT)]
        return command

    def train(self, network: Network, run: int) -> str:
        folder = self.fold_folder(network, run)
        if os.path.isfile(os.path.join(folder, "checkpoint_final.pth")):
            return folder
        before = network.pretrained_from(self.profile)
        if before is not None:
            self.train(before, run)
        self.ensure_plans(network)
        with self.lock(f"train_{network.key}_run{run}"):
            if not os.path.isfile(os.path.join(folder, "checkpoint_final.pth")):
                self._train(network, run, folder)
        return folder

    def _train(self, network: Network, run: int, folder: str) -> None:
        command = self.train_command(network, run)
        if os.path.isfile(os.path.join(folder, "checkpoint_latest.pth")):
            # nnU-Net refuses --c together with -pretrained_weights; the checkpoint holds the weights anyway
            command = command[:command.index("-pretrained_weights")] if "-pretrained_weights" in command else command
            command.append("--c")
        self.log(f"training {network.key}, run {run}: {network.trainer(self.profile)} with {network.plans}")
        started = time.time()
        self.run_command(command, f"train_{network.key}_run{run}",
                         {"NNUNET_EXT_SEED": str(self.seed(run)), "nnUNet_n_proc_DA": "1"})
        self.log(f"  trained in {time.time() - started:.0f} s")

    # ---- test data -----------------------------------------------------------------------------------------
    def _case_centers(self) -> Dict[str, str]:
        with open(os.path.join(self.dataset(CLOT_ID), "case_centers.json")) as f:
            return json.load(f)

    def test_cases(self, test_set: str) -> List[str]:
        raw = self.dataset(CLOT_ID)
        centers = self._case_centers()
        cases = sorted(f[:-len(".nii.gz")] for f in os.listdir(os.path.join(raw, "labelsTs")) if f.endswith(".nii.gz"))
        return [c for c in cases if centers[c] in TEST_SETS[test_set]]

    def test_inputs(self, test_set: str, channels: Sequence[str] = CHANNELS) -> str:
        """A folder with the test images of one test set, `channels` only (renumbered), for nnunet_ext_predict."""
        name = test_set if tuple(channels) == CHANNELS else f"{test_set}_{'_'.join(channels)}"
        folder = os.path.join(self.root, "inputs", name)
        if os.path.isdir(folder):
            return folder
        raw = self.dataset(CLOT_ID)
        with staged_dataset_folder(os.path.dirname(folder), name) as staging:
            for case in self.test_cases(test_set):
                for new_index, channel in enumerate(channels):
                    _link_or_copy(os.path.join(raw, "imagesTs", f"{case}_{CHANNELS.index(channel):04d}.nii.gz"),
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
        raw = self.dataset(CLOT_ID)
        cases = self.test_cases(test_set)
        if len(cases) < 2:
            raise ValueError(f"swapping DWI needs 2 or more test cases in {test_set}, got {len(cases)}")

        def image(case: str, channel: str) -> str:
            return os.path.join(raw, "imagesTs", f"{case}_{CHANNELS.index(channel):04d}.nii.gz")

        self._log_command(f"[in process] {folder}: DWI of case k+1 (resampled onto case k) with case k's SWAN, PHASE")
        with staged_dataset_folder(os.path.dirname(folder), name) as staging:
            for case, donor in zip(cases, cases[1:] + cases[:1]):
                own = read_image_checked(image(case, "DWI"))
                write_image_verified(resample_onto(read_image_checked(image(donor, "DWI")), own),
                                     os.path.join(staging, f"{case}_{CHANNELS.index('DWI'):04d}.nii.gz"))
                for channel in CHANNELS[1:]:
                    _link_or_copy(image(case, channel),
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
                _link_or_copy(os.path.join(source, f"{case}.nii.gz"), os.path.join(staging, f"{case}.nii.gz"))
        return folder

    def occlusion_groups(self) -> Dict[str, str]:
        with open(os.path.join(self.source_dataset(), OCCLUSION_FILE)) as f:
            return {case: record["occlusion"] for case, record in json.load(f).items()}

    # ---- prediction, post-processing, evaluation ------------------------------------------------------------
    def prediction_folder(self, network: Network, test_set: str, phase: str, run: int) -> str:
        return os.path.join(self.root, "predictions", network.key, f"run{run}", f"{test_set}_{phase}")

    def predict_command(self, network: Network, test_set: str, phase: str, run: int) -> List[str]:
        lesion = network.target == "lesion"
        inputs = os.path.join(self.root, "inputs", f"{test_set}_DWI" if lesion else
                              f"{test_set}_{DWI_SWAPPED}" if phase == DWI_SWAPPED else test_set)
        command = ["nnunet_ext_predict", "-i", inputs, "-o", self.prediction_folder(network, test_set, phase, run),
                   "-d", str(network.dataset_id), "-c", CONFIGURATION, "-f", str(run_fold(run)), "-p", network.plans,
                   "-tr", network.trainer(self.profile), "-device", self.profile.device, "-chk", PREDICTION_CHECKPOINT,
                   "--disable_tta", "-npp", "0", "-nps", "0"]  # sequential: no worker start-up
        if not lesion:
            command.append("--save_probabilities")  # for the Thr step
        if phase == "missing":
            command += ["--missing", DROPPABLE]
        return command

    def predict(self, network: Network, test_set: str, phase: str, run: int) -> str:
        folder = self.prediction_folder(network, test_set, phase, run)
        done = os.path.join(folder, ".complete")
        if os.path.isfile(done):
            return folder
        self.train(network, run)
        with self.lock(f"predict_{network.key}_run{run}_{test_set}_{phase}"):
            if not os.path.isfile(done):
                self._predict(network, test_set, phase, run, done)
        return folder

    def _predict(self, network: Network, test_set: str, phase: str, run: int, done: str) -> None:
        if phase == DWI_SWAPPED:
            self.swapped_dwi_inputs(test_set)
        else:
            self.test_inputs(test_set, ("DWI",) if network.target == "lesion" else CHANNELS)
        self.run_command(self.predict_command(network, test_set, phase, run),
                         f"predict_{network.key}_run{run}_{test_set}_{phase}")
        open(done, "w").close()

    def lesion_masks(self, test_set: str, source: str, run: int) -> str:
        if source == "reference":
            return self.references("lesion", test_set)
        return self.predict(LESION_NETWORK, test_set, "present", run)

    def step_texts(self, chain: Sequence[str]) -> List[str]:
        """The steps of a post-processed row: min-size (the profile's n_min), then the paper's columns in order."""
        if not chain:
            return []
        values = {"Lesion": f":{self.profile.lesion_distance_mm}", "Thr": f":{THRESHOLD}", "Big": ""}
        return [f"min_size:{self.profile.min_size_voxels}"] + [STEPS[name] + values[name] for name in chain]

    def postprocess_command(self, row: Row, prediction: str, run: int) -> Tuple[List[str], str]:
        output = os.path.join(self.root, "postprocessed", row.network.key, f"run{run}", row.key.split("__", 1)[1])
        command = ["nnunet_ext_postprocess", "-i", prediction, "-o", output, "--steps", *self.step_texts(row.chain)]
        if "Lesion" in row.chain:
            command += ["--lesions", self.lesion_masks(row.test_set, row.lesion_source, run), "--distance-units",
                        "mm"]
        return command, output

    def postprocess(self, row: Row, prediction: str, run: int) -> str:
        if not row.chain:
            return prediction
        command, output = self.postprocess_command(row, prediction, run)
        if os.path.isdir(output):  # written atomically: a folder that exists is complete
            return output
        # in process (no interpreter start per chain); the line in commands.log is the equivalent command
        self._log_command("[in process] " + shlex.join(command))
        lesions = command[command.index("--lesions") + 1] if "--lesions" in command else None
        postprocess_folder(prediction, output, [parse_step(s) for s in self.step_texts(row.chain)], lesions,
                           distance_units="mm", command=shlex.join(command))
        return output

    def evaluate(self, folder: str, what: str, test_set: str) -> Tuple[List[Dict], Dict]:
        groups = self.occlusion_groups()
        rows = evaluate_folders(folder, self.references(what, test_set), EvaluationSettings(), groups)
        return rows, summarize(rows)

    def result_path(self, row: Row, run: int) -> str:
        return os.path.join(self.root, "results", f"run{run}", f"{row.key}.json")

    def run_row(self, row: Row, run: int) -> Dict:
        """Run `run` of one row (its file when it has finished before)."""
        path = self.result_path(row, run)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        prediction = self.predict(row.network, row.test_set, row.phase, run)
        folder = self.postprocess(row, prediction, run)
        per_case, summary = self.evaluate(folder, "clot", row.test_set)
        commands = [shlex.join(self.train_command(n, run)) for n in row_networks([row], self.profile)]
        commands.append(shlex.join(self.predict_command(row.network, row.test_set, row.phase, run)))
        if row.chain:
            commands.append(shlex.join(self.postprocess_command(row, prediction, run)[0]))
        result = {"key": row.key, "run": run, "fold": run_fold(run), "seed": self.seed(run),
                  "network": asdict(row.network), "trainer": row.network.trainer(self.profile),
                  "plans": row.network.plans, "dataset_id": row.network.dataset_id, "test_set": row.test_set,
                  "phase": row.phase, "chain": list(row.chain), "steps": self.step_texts(row.chain),
                  "lesion_source": row.lesion_source if "Lesion" in row.chain else None,
                  "metrics": table_metrics(summary["1"]), "summary": summary, "per_case": per_case,
                  "folders": {"prediction": prediction, "evaluated": folder}, "commands": commands,
                  "profile": asdict(self.profile), "provenance": provenance(seed=self.seed(run),
                                                                            command=self.command)}
        write_json_files({path: result})
        return result

    def lesion_result_path(self, test_set: str, run: int) -> str:
        return os.path.join(self.root, "results", f"run{run}", f"{LESION_NETWORK.key}__{test_set}.json")

    def lesion_model_result(self, test_set: str, run: int) -> Dict:
        """Dice of run `run`'s lesion model, the one that feeds that run's Lesion step (reported beside Table 6)."""
        path = self.lesion_result_path(test_set, run)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        folder = self.predict(LESION_NETWORK, test_set, "present", run)
        per_case, summary = self.evaluate(folder, "lesion", test_set)
        result = {"key": LESION_NETWORK.key, "run": run, "dice": summary["1"]["all"]["dice"], "summary": summary,
                  "commands": [shlex.join(self.train_command(LESION_NETWORK, run)),
                               shlex.join(self.predict_command(LESION_NETWORK, test_set, "present", run))],
                  "provenance": provenance(seed=self.seed(run), command=self.command)}
        write_json_files({path: result})
        return result

    def dwi_swap_result_path(self, network: Network, run: int) -> str:
        return os.path.join(self.root, "results", f"run{run}", f"{DWI_SWAPPED}__{network.key}.json")

    def dwi_swap_result(self, network: Network, run: int) -> Dict:
        """Run `run` of the DWI-swap check of one attention model on the A+B test cases: its predictions with each
        case's own DWI against those with another case's DWI (agreement Dice per case; a model that ignores DWI
        gives 1.0 everywhere), and the clot Dice of both."""
        path = self.dwi_swap_result_path(network, run)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
        own = self.predict(network, "AB", "present", run)
        swapped = self.predict(network, "AB", DWI_SWAPPED, run)
        per_case = []
        for case in self.test_cases("AB"):
            a, b = (sitk.GetArrayFromImage(read_image_checked(os.path.join(f, f"{case}.nii.gz"))) for f in (own, swapped))
            per_case.append({"case": case, "agreement_dice": dice(a > 0, b > 0), "voxels_changed": int((a != b).sum()),
                             "voxels_own": int((a > 0).sum()), "voxels_swapped": int((b > 0).sum())})
        clot_dice = {name: self.evaluate(folder, "clot", "AB")[1]["1"]["all"]["dice"]["mean"]
                     for name, folder in (("own_dwi", own), ("swapped_dwi", swapped))}
        result = {"key": f"{DWI_SWAPPED}__{network.key}", "run": run, "network": asdict(network),
                  "cases": len(per_case), "cases_changed": sum(1 for c in per_case if c["voxels_changed"]),
                  "mean_agreement_dice": float(np.mean([c["agreement_dice"] for c in per_case])),
                  "clot_dice": clot_dice, "per_case": per_case,
                  "commands": [shlex.join(self.predict_command(network, "AB", p, run)) for p in ("present",
                                                                                             DWI_SWAPPED)],
                  "provenance": provenance(seed=self.seed(run), command=self.command)}
        write_json_files({path: result})
        return result

    # ---- tables --------------------------------------------------------------------------------------------
    def read_tables(self, selection: Mapping[int, Optional[Sequence[str]]], lesion_source: Optional[str] = None,
                    up_to_run: Optional[int] = None
                    ) -> Dict[int, Tuple[List[Row], Dict[str, List[Optional[Dict]]], List[str]]]:
        """{table: (rows, row key -> one result per run (None: not finished), extra notes)} for the tables and
        models in `selection`, read from the runs finished so far (`job_stages` computes them). Nothing is
        computed; up_to_run only checks that the runs asked for exist in the profile."""
        self._last_run(up_to_run)
        runs = range(1, self.profile.runs + 1)
        reports = {}
        for table, models in selection.items():
            rows = table_rows(table, self.profile, models, lesion_source)
            results = {row.key: [self.run_row(row, run) if os.path.isfile(self.result_path(row, run)) else None
                                 for run in runs] for row in rows}
            reports[table] = (rows, results, self._lesion_notes(rows) + self._dwi_swap_notes(rows))
        return reports

    def _last_run(self, up_to_run: Optional[int]) -> int:
        last = self.profile.runs if up_to_run is None else up_to_run
        if not 1 <= last <= self.profile.runs:
            raise ValueError(f"runs to compute must be 1..{self.profile.runs} (profile {self.profile.name!r}), "
                             f"got {up_to_run}")
        return last

    # ---- the same work as jobs (nnunet_ext.experiments.jobs) -----------------------------------------------
    def _selected_rows(self, selection: Mapping[int, Optional[Sequence[str]]],
                       lesion_source: Optional[str]) -> List[Row]:
        rows = [row for table, models in selection.items() for row in table_rows(table, self.profile, models,
                                                                                 lesion_source)]
        return list({row.key: row for row in rows}.values())  # a row shared by two tables once

    def prepare(self, selection: Mapping[int, Optional[Sequence[str]]], lesion_source: Optional[str]) -> None:
        """Everything the parallel jobs would otherwise race to create: datasets, plans, test inputs, references."""
        rows = self._selected_rows(selection, lesion_source)
        for network in row_networks(rows, self.profile):
            self.ensure_plans(network)
        for row in rows:
            self.test_inputs(row.test_set)
            self.references("clot", row.test_set)
            if "Lesion" in row.chain:
                if row.lesion_source == "model":
                    self.test_inputs(row.test_set, ("DWI",))
                    self.references("lesion", "AB")  # the lesion model's own Dice, reported beside Table 6
                else:
                    self.references("lesion", row.test_set)
        self.occlusion_groups()

    def train_chain(self, networks: Sequence[Network], run: int) -> None:
        """Train `networks` in order (a model, then the fine-tunes that start from it) for run `run`."""
        for network in networks:
            self.train(network, run)

    def evaluate_run(self, selection: Mapping[int, Optional[Sequence[str]]], lesion_source: Optional[str],
                     run: int) -> None:
        """Predict, post-process and evaluate every selected row of run `run` (its trainings have finished)."""
        rows = self._selected_rows(selection, lesion_source)
        for row in rows:
            self.run_row(row, run)
        if any("Lesion" in r.chain and r.lesion_source == "model" for r in rows):
            self.lesion_model_result("AB", run)
        for network in dwi_swap_networks(rows):
            self.dwi_swap_result(network, run)

    def job_stages(self, selection: Mapping[int, Optional[Sequence[str]]], lesion_source: Optional[str] = None,
                   up_to_run: Optional[int] = None) -> List[List[Task]]:
        """The unfinished work of runs 1..up_to_run as jobs: preparation; one job per (training, run) (a model
        with the fine-tunes that start from it); then one job per run that predicts, post-processes and evaluates
        its rows."""
        last = self._last_run(up_to_run)
        rows = self._selected_rows(selection, lesion_source)
        chains: Dict[Network, List[Network]] = {}
        for network in row_networks(rows, self.profile):  # a fine-tune comes after the model it starts from
            root = network
            while root.pretrained_from(self.profile) is not None:
                root = root.pretrained_from(self.profile)
            chains.setdefault(root, []).append(network)
        trainings, evaluations = [], []
        for run in range(1, last + 1):
            for root, chain in chains.items():
                if not all(os.path.isfile(os.path.join(self.fold_folder(n, run), "checkpoint_final.pth"))
                           for n in chain):
                    trainings.append(Task(f"train {'+'.join(n.key for n in chain)} run {run}", self, "train_chain",
                                          chain, run))
            lesion_model = any("Lesion" in r.chain and r.lesion_source == "model" for r in rows)
            if not all(os.path.isfile(self.result_path(row, run)) for row in rows) or (
                    lesion_model and not os.path.isfile(self.lesion_result_path("AB", run))) or not all(
                    os.path.isfile(self.dwi_swap_result_path(n, run)) for n in dwi_swap_networks(rows)):
                evaluations.append(Task(f"evaluate run {run}", self, "evaluate_run", dict(selection), lesion_source,
                                        run))
        if not trainings and not evaluations:
            return []
        return [[Task("clot tables: datasets, plans, inputs", self, "prepare", dict(selection), lesion_source)],
                trainings, evaluations]

    def _dwi_swap_notes(self, rows: Sequence[Row]) -> List[str]:
        """One note per attention model of the table: does it use DWI (its predictions with another case's DWI)?"""
        notes = []
        for network in dwi_swap_networks(rows):
            found = [self.dwi_swap_result(network, run) for run in range(1, self.profile.runs + 1)
                     if os.path.isfile(self.dwi_swap_result_path(network, run))]
            if not found:
                continue
            runs = "; ".join(f"run {r['run']}: {r['cases_changed']}/{r['cases']} cases changed, agreement Dice "
                             f"{r['mean_agreement_dice']:.2f}, clot Dice {r['clot_dice']['own_dwi']:.2f} -> "
                             f"{r['clot_dice']['swapped_dwi']:.2f}" for r in found)
            notes.append(f"DWI swapped between A+B test cases ({network.key}: each case predicted with the next "
                         f"case's DWI, resampled onto it; a model that ignores DWI changes no prediction): {runs}.")
        return notes

    def _lesion_notes(self, rows: Sequence[Row]) -> List[str]:
        if not any("Lesion" in r.chain and r.lesion_source == "model" for r in rows):
            return []
        dice = []
        for run in range(1, self.profile.runs + 1):
            if not os.path.isfile(self.lesion_result_path("AB", run)):
                dice.append(None)
                continue
            dice.append(self.lesion_model_result("AB", run)["dice"]["mean"])
        present = [d for d in dice if d is not None]
        missing = [str(run) for run, d in enumerate(dice, start=1) if d is None]
        text = "-" if not present else f"{np.mean(present):.2f} ± {np.std(present):.2f} (runs: " + ", ".join(
            "-" if d is None else f"{d:.2f}" for d in dice) + ")"
        return [f"Lesion model ({LESION_NETWORK.trainer(self.profile)}, DWI only, one per run): mean lesion Dice "
                f"{text} on the A+B test cases" + (f"; run(s) {', '.join(missing)} of {len(dice)} missing or without "
                                                   "a lesion Dice" if missing else "") + "."]
