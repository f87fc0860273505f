"""The harness of the thrombus Tables 5-7: post-processing, evaluation and the result files of every (row, run), the
tables read from them, and the same work as jobs; the models and their predictions come from models.py.

Layout of <workdir>/clot beside models.py's:
  postprocessed/<network>/run<k>/<set>_<phase>__<chain>/
  results/run<k>/<row key>.json                 one evaluated row of run k; shared by the tables that have it
  results/run<k>/dwi_swapped__<network>.json    the DWI-swap check of an attention model (inputs/AB_dwi_swapped)
Resumable per (row, run): a finished row or post-processing folder is never redone.
"""
import json
import os
import shlex
from dataclasses import asdict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nnunet_ext.data.nifti import read_image_checked
from nnunet_ext.data.splits import write_json_files
from nnunet_ext.evaluation.evaluate import EvaluationSettings, evaluate_folders, summarize
from nnunet_ext.evaluation.metrics import dice
from nnunet_ext.experiments.clot.aggregate import table_metrics
from nnunet_ext.experiments.clot.datasets import run_fold
from nnunet_ext.experiments.clot.models import ClotModels
from nnunet_ext.experiments.clot.profiles import STEPS, THRESHOLD, ClotProfile
from nnunet_ext.experiments.clot.report import dwi_swap_note, lesion_note, validation_note
from nnunet_ext.experiments.clot.rows import LESION_NETWORK, Network, Row, row_networks, table_rows
from nnunet_ext.experiments.clot.test_data import DWI_SWAPPED
from nnunet_ext.experiments.jobs import Task
from nnunet_ext.experiments.progress import fold_progress, fold_validation_course
from nnunet_ext.networks.clot_networks import ATTENTION_MODELS
from nnunet_ext.postprocessing.clot import parse_step
from nnunet_ext.postprocessing.folders import postprocess_folder
from nnunet_ext.provenance import provenance

def dwi_swap_networks(rows: Sequence[Row]) -> List[Network]:
    """The attention models among `rows`' raw A+B rows with PHASE present: the ones the DWI-swap check runs on."""
    found = {row.network: None for row in rows if row.network.model in ATTENTION_MODELS and not row.chain
             and row.test_set == "AB" and row.phase_channel == "present"}
    return list(found)


def finished_or_computed(path: str, compute: Callable[[], Dict]) -> Dict:
    """The result file at `path` where a run finished it before; else `compute()`, written whole (complete or
    absent: a finished result is one that has its file)."""
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    result = compute()
    write_json_files({path: result})
    return result


class ClotHarness:
    """Tables 5-7 from the models (models.py): post-processing, evaluation, the result files of every (row, run),
    the tables read from them, and the same work as jobs."""

    def __init__(self, workdir: str, profile: ClotProfile, log: Callable[[str], None] = print, command: str = ""):
        self.models = ClotModels(workdir, profile, log)
        self.workdir, self.root, self.workspace = self.models.workdir, self.models.root, self.models.workspace
        self.test_data = self.models.test_data
        self.profile, self.log, self.command = profile, log, command

    # ---- post-processing, evaluation -------------------------------------------------------------------------
    def lesion_masks(self, test_set: str, source: str, run: int) -> str:
        if source == "reference":
            return self.test_data.references("lesion", test_set)
        return self.models.predict(LESION_NETWORK, test_set, "present", run)

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
        self.workspace.note(shlex.join(command))
        lesions = command[command.index("--lesions") + 1] if "--lesions" in command else None
        postprocess_folder(prediction, output, [parse_step(s) for s in self.step_texts(row.chain)], lesions,
                           distance_units="mm", command=shlex.join(command))
        return output

    def evaluate(self, folder: str, what: str, test_set: str) -> Tuple[List[Dict], Dict]:
        groups = self.test_data.occlusion_groups()
        rows = evaluate_folders(folder, self.test_data.references(what, test_set), EvaluationSettings(), groups)
        return rows, summarize(rows)

    def result_path(self, row: Row, run: int) -> str:
        return os.path.join(self.root, "results", f"run{run}", f"{row.key}.json")

    def run_row(self, row: Row, run: int) -> Dict:
        """Run `run` of one row (its file when it has finished before)."""
        return finished_or_computed(self.result_path(row, run), lambda: self._evaluate_row(row, run))

    def _evaluate_row(self, row: Row, run: int) -> Dict:
        prediction = self.models.predict(row.network, row.test_set, row.phase_channel, run)
        folder = self.postprocess(row, prediction, run)
        per_case, summary = self.evaluate(folder, "clot", row.test_set)
        commands = [shlex.join(self.models.train_command(n, run)) for n in row_networks([row], self.profile)]
        commands.append(shlex.join(self.models.predict_command(row.network, row.test_set, row.phase_channel, run)))
        if row.chain:
            commands.append(shlex.join(self.postprocess_command(row, prediction, run)[0]))
        result = {"key": row.key, "run": run, "fold": run_fold(run), "seed": self.models.seed(run),
                  "network": asdict(row.network), "trainer": row.network.trainer(self.profile),
                  "plans": row.network.plans, "dataset_id": row.network.dataset_id, "test_set": row.test_set,
                  "phase": row.phase_channel, "chain": list(row.chain), "steps": self.step_texts(row.chain),
                  "lesion_source": row.lesion_source if "Lesion" in row.chain else None,
                  "metrics": table_metrics(summary["1"]), "summary": summary, "per_case": per_case,
                  "folders": {"prediction": prediction, "evaluated": folder}, "commands": commands,
                  "profile": asdict(self.profile), "provenance": provenance(seed=self.models.seed(run),
                                                                            command=self.command)}
        return result

    def lesion_result_path(self, test_set: str, run: int) -> str:
        return os.path.join(self.root, "results", f"run{run}", f"{LESION_NETWORK.key}__{test_set}.json")

    def lesion_model_result(self, test_set: str, run: int) -> Dict:
        """Dice of run `run`'s lesion model, the one that feeds that run's Lesion step (reported beside Table 6)."""
        return finished_or_computed(self.lesion_result_path(test_set, run),
                                    lambda: self._evaluate_lesion_model(test_set, run))

    def _evaluate_lesion_model(self, test_set: str, run: int) -> Dict:
        folder = self.models.predict(LESION_NETWORK, test_set, "present", run)
        per_case, summary = self.evaluate(folder, "lesion", test_set)
        result = {"key": LESION_NETWORK.key, "run": run, "dice": summary["1"]["all"]["dice"], "summary": summary,
                  "commands": [shlex.join(self.models.train_command(LESION_NETWORK, run)),
                               shlex.join(self.models.predict_command(LESION_NETWORK, test_set, "present", run))],
                  "provenance": provenance(seed=self.models.seed(run), command=self.command)}
        return result

    def dwi_swap_result_path(self, network: Network, run: int) -> str:
        return os.path.join(self.root, "results", f"run{run}", f"{DWI_SWAPPED}__{network.key}.json")

    def dwi_swap_result(self, network: Network, run: int) -> Dict:
        """Run `run` of the DWI-swap check of one attention model on the A+B test cases: its predictions with each
        case's own DWI against those with another case's DWI (agreement Dice per case; a model that ignores DWI
        gives 1.0 everywhere), and the clot Dice of both."""
        return finished_or_computed(self.dwi_swap_result_path(network, run), lambda: self._swap_dwi(network, run))

    def _swap_dwi(self, network: Network, run: int) -> Dict:
        own = self.models.predict(network, "AB", "present", run)
        swapped = self.models.predict(network, "AB", DWI_SWAPPED, run)
        per_case = []
        for case in self.test_data.test_cases("AB"):
            a, b = (sitk.GetArrayFromImage(read_image_checked(os.path.join(folder, f"{case}.nii.gz")))
                    for folder in (own, swapped))
            per_case.append({"case": case, "agreement_dice": dice(a > 0, b > 0), "voxels_changed": int((a != b).sum()),
                             "voxels_own": int((a > 0).sum()), "voxels_swapped": int((b > 0).sum())})
        clot_dice = {name: self.evaluate(folder, "clot", "AB")[1]["1"]["all"]["dice"]["mean"]
                     for name, folder in (("own_dwi", own), ("swapped_dwi", swapped))}
        result = {"key": f"{DWI_SWAPPED}__{network.key}", "run": run, "network": asdict(network),
                  "cases": len(per_case), "cases_changed": sum(1 for c in per_case if c["voxels_changed"]),
                  "mean_agreement_dice": float(np.mean([c["agreement_dice"] for c in per_case])),
                  "clot_dice": clot_dice, "per_case": per_case,
                  "commands": [shlex.join(self.models.predict_command(network, "AB", p, run)) for p in ("present",
                                                                                             DWI_SWAPPED)],
                  "provenance": provenance(seed=self.models.seed(run), command=self.command)}
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
            reports[table] = (rows, results, self._lesion_notes(rows) + self._dwi_swap_notes(rows) +
                              self._validation_notes(rows))
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
            self.models.ensure_plans(network)
        for row in rows:
            self.test_data.test_inputs(row.test_set)
            self.test_data.references("clot", row.test_set)
            if "Lesion" in row.chain:
                if row.lesion_source == "model":
                    self.test_data.test_inputs(row.test_set, ("DWI",))
                    self.test_data.references("lesion", "AB")  # the lesion model's own Dice, reported beside Table 6
                else:
                    self.test_data.references("lesion", row.test_set)
        self.test_data.occlusion_groups()

    def train_chain(self, networks: Sequence[Network], run: int) -> None:
        """Train `networks` in order (a model, then the fine-tunes that start from it) for run `run`."""
        for network in networks:
            self.models.train(network, run)

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
                if not all(self.workspace.is_trained(self.models.model(n, run)) for n in chain):
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

    def progress_line(self, method: str, *args) -> Optional[str]:
        """For the jobs' progress lines: the training a `train_chain` job is at (None for other jobs)."""
        if method != "train_chain":
            return None
        networks, run = args
        for network in networks:
            if not self.workspace.is_trained(self.models.model(network, run)):
                progress = fold_progress(self.models.fold_folder(network, run), self.profile.epochs)
                return f"{network.key}: " + (progress.line() if progress else "starting")
        return None

    def _validation_notes(self, rows: Sequence[Row]) -> List[str]:
        """How each trained network's validation pseudo Dice went, per run (read from nnU-Net's training logs), and
        which runs have results but no such log (a results folder moved or renamed since: named, not skipped)."""
        courses, unread = {}, []
        for network in row_networks(rows, self.profile):
            its_rows = [row for row in rows if network in row_networks([row], self.profile)]
            runs = []
            for run in range(1, self.profile.runs + 1):
                folder = self.models.fold_folder(network, run)
                course = (fold_validation_course(folder)
                          if self.workspace.is_trained(self.models.model(network, run)) else None)
                if course is not None:
                    runs.append((run, course))
                elif any(os.path.isfile(self.result_path(row, run)) for row in its_rows):
                    unread.append(f"{network.key} run {run} ({folder})")
            courses[network.key] = runs
        return ([validation_note(courses, unread, self.profile.validation_cases)]
                if any(courses.values()) or unread else [])

    def _dwi_swap_notes(self, rows: Sequence[Row]) -> List[str]:
        """One note per attention model of the table: does it use DWI (its predictions with another case's DWI)?"""
        notes = []
        for network in dwi_swap_networks(rows):
            found = [self.dwi_swap_result(network, run) for run in range(1, self.profile.runs + 1)
                     if os.path.isfile(self.dwi_swap_result_path(network, run))]
            if found:
                notes.append(dwi_swap_note(network.key, found))
        return notes

    def _lesion_notes(self, rows: Sequence[Row]) -> List[str]:
        if not any("Lesion" in r.chain and r.lesion_source == "model" for r in rows):
            return []
        dice = [self.lesion_model_result("AB", run)["dice"]["mean"]
                if os.path.isfile(self.lesion_result_path("AB", run)) else None
                for run in range(1, self.profile.runs + 1)]
        return [lesion_note(LESION_NETWORK.trainer(self.profile), dice)]
