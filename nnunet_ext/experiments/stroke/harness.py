"""The experiment harness: datasets, the grid of trainings through the stock nnU-Net CLIs, evaluation.

Resumable: every finished run leaves runs/table<N>/<cell>/fold_<k>.json and is skipped next time; an
interrupted training continues with --c. Every command is appended to <workdir>/commands.log, and each
command's output goes to <workdir>/logs/.
"""
import json
import os
import socket
import time
from dataclasses import asdict
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from nnunet_ext.data.diffusion import SOURCES
from nnunet_ext.data.splits import write_json_files
from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.evaluation.folders import dice_per_case
from nnunet_ext.experiments.datasets import derive_dataset
from nnunet_ext.experiments.jobs import Task
from nnunet_ext.experiments.locks import run_lock
from nnunet_ext.experiments.progress import fold_progress
from nnunet_ext.experiments.stroke.settings import Cell, Profile, TableSetting
from nnunet_ext.experiments.workspace import TrainedModel, Workspace
from nnunet_ext.provenance import provenance

SOURCE_ID = 510
DATASET_IDS = {(2, "all_centers"): 511, (3, "unseen_held_out"): 512, (3, "all_centers"): 513}


def _check_selection(table: TableSetting, methods: Optional[Sequence[str]],
                     probabilities: Optional[Sequence[float]]) -> None:
    """A name or probability the table does not have is an error, not a silently smaller table."""
    known = list(dict.fromkeys([c.method for c in table.cells] + [c.key for c in table.cells]))
    unknown = [m for m in methods or () if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))} for Table {table.number}; expected "
                         f"some of {', '.join(known)}")
    table_probabilities = sorted({c.probability for c in table.cells if c.probability is not None})
    absent = [p for p in probabilities or () if p not in table_probabilities]
    if absent:
        raise ValueError(f"drop probabilit{'ies' if len(absent) > 1 else 'y'} {', '.join(map(str, absent))} not in "
                         f"Table {table.number} (it has {', '.join(map(str, table_probabilities))})")


class Harness:
    def __init__(self, workdir: str, table: TableSetting, profile: Profile, source: Optional[str] = None,
                 methods: Optional[Sequence[str]] = None, probabilities: Optional[Sequence[float]] = None,
                 runs: Optional[int] = None, log: Callable[[str], None] = print):
        self.workdir = os.path.abspath(workdir)
        self.table, self.profile, self.source, self.log = table, profile, source, log
        self.runs = runs if runs is not None else profile.runs
        _check_selection(table, methods, probabilities)
        self.cells = [c for c in table.cells
                      if (methods is None or c.method in methods or c.key in methods)
                      and (probabilities is None or c.probability is None or c.probability in probabilities)]
        if not self.cells:
            raise ValueError(f"no cell of Table {table.number} matches methods={methods}, "
                             f"probabilities={probabilities}")
        # nnU-Net's own validation after training is skipped: the harness evaluates on the test set itself; the
        # derived dataset.json decides the droppable channels
        self.workspace = Workspace(self.workdir, {"NNUNET_EXT_FINAL_VALIDATION": "0"},
                                   unset=("NNUNET_EXT_DROPPABLE_CHANNELS",))
        self.paths = self.workspace.paths
        # a row with the droppable channel rebuilt by physics (nnunet_ext.data.diffusion) where the table has the
        # two channels it is made from, on images that obey the equation: the physical cohort or real data
        sources = SOURCES.get(table.droppable, ())
        self.rebuild_row = bool(sources) and all(c in table.channels for c in sources) and (
            profile.physics or source is not None)

    # ---- datasets ----------------------------------------------------------------------------------------
    def source_dataset(self) -> str:
        if self.source is not None:
            return self.source
        spec = CohortSpec(dataset_id=SOURCE_ID, name="SyntheticStrokeSource", size=self.profile.size,
                          train_per_center=self.profile.train_per_center,
                          test_per_center=self.profile.test_per_center, seed=self.profile.seed,
                          shine_through_dwi=self.profile.shine_through_dwi, lesion_b0=self.profile.lesion_b0,
                          physics=self.profile.physics)
        existing = self.workspace.raw_dataset(SOURCE_ID)
        if existing:
            with open(os.path.join(existing, "cohort.json")) as f:
                stored = json.load(f)["spec"]
            if stored != json.loads(json.dumps(asdict(spec))):
                raise ValueError(f"{existing} was generated for another profile ({stored}); profile "
                                 f"{self.profile.name!r} needs {asdict(spec)}: use another --workdir")
            return existing
        with self.workspace.lock(f"dataset_{SOURCE_ID}"):
            self.log(f"generating the synthetic cohort ({spec.folder_name})")
            return write_cohort(spec, self.paths["nnUNet_raw"], progress=False)

    def dataset(self, variant: str) -> Tuple[int, str]:
        """(dataset id, raw folder) of a dataset variant, derived, planned and preprocessed if needed; under a lock
        per dataset, so that two harnesses on one workdir never plan one dataset at once."""
        dataset_id = DATASET_IDS[(self.table.number, variant)]
        raw = self.workspace.raw_dataset(dataset_id)
        if raw is not None and self._planned(raw):  # the usual case in a job: nothing to do, no lock to take
            return dataset_id, raw
        with self.workspace.lock(f"dataset_{dataset_id}"):
            return self._dataset(variant, dataset_id)

    def _planned(self, raw: str) -> bool:
        preprocessed = self.workspace.preprocessed(raw)
        return all(os.path.isfile(os.path.join(preprocessed, f"{plans}.json"))
                   for plans in ("nnUNetPlans", self.plans))

    def _dataset(self, variant: str, dataset_id: int) -> Tuple[int, str]:
        raw = self.workspace.raw_dataset(dataset_id)
        if raw is None:
            held_out = self.table.unseen_center if variant == "unseen_held_out" else None
            name = f"Table{self.table.number}_{variant}"
            raw = derive_dataset(self.source_dataset(), self.paths["nnUNet_raw"], dataset_id, name,
                                 self.table.channels, self.table.droppable, held_out)
        if not os.path.isfile(os.path.join(self.workspace.preprocessed(raw), "nnUNetPlans.json")):
            self.log(f"planning and preprocessing {os.path.basename(raw)}")
            self.workspace.plan_and_preprocess(dataset_id, verify=True)
        if self.profile.cpu_plans and not os.path.isfile(os.path.join(self.workspace.preprocessed(raw),
                                                                      "nnUNetPlans_CPU.json")):
            self.workspace.run(["nnunet_ext_plan_cpu", "-d", str(dataset_id)], f"plan_cpu_{dataset_id}")
        return dataset_id, raw

    @property
    def plans(self) -> str:
        return "nnUNetPlans_CPU" if self.profile.cpu_plans else "nnUNetPlans"

    # ---- one run of one cell -----------------------------------------------------------------------------
    def model(self, cell: Cell, fold: int, dataset_id: int, raw: str) -> TrainedModel:
        """The nnU-Net model of `cell` in fold `fold`, trained on the raw dataset `raw`."""
        return TrainedModel(dataset_id, os.path.basename(raw), cell.trainer(self.profile), self.plans, fold)

    def result_path(self, cell: Cell, fold: int) -> str:
        return os.path.join(self.workdir, "runs", f"table{self.table.number}", cell.key, f"fold_{fold}.json")

    def run_cell(self, cell: Cell, fold: int) -> Dict:
        path = self.result_path(cell, fold)
        if os.path.isfile(path):
            with open(path) as f:
                finished = json.load(f)
            if finished["profile"] != json.loads(json.dumps(asdict(self.profile))):
                raise ValueError(f"{path} was run with profile {finished['profile']}, not {asdict(self.profile)}: "
                                 "use another --workdir")
            return finished
        with run_lock(path + ".lock"):
            return self._train_and_evaluate(cell, fold, path)

    def _train_and_evaluate(self, cell: Cell, fold: int, path: str) -> Dict:
        started = time.time()
        dataset_id, raw = self.dataset(cell.dataset_variant)
        model = self.model(cell, fold, dataset_id, raw)
        seed = self.profile.seed + fold
        tag = f"t{self.table.number}_{cell.key}_f{fold}"
        if not self.workspace.is_trained(model):
            self.log(f"training {cell.label} (fold {fold}): {model.trainer}")
        self.workspace.train(model, f"train_{tag}", self.profile.device,
                             extra_env={"NNUNET_EXT_SEED": str(seed), "nnUNet_n_proc_DA": "1"})
        rows = {}
        predictions = [("all", []), ("missing", ["--missing", self.table.droppable])]
        if self.rebuild_row:  # the droppable channel discarded and rebuilt by physics from the two others
            predictions.append(("rebuilt", ["--missing", self.table.droppable, "--rebuild", self.table.droppable]))
        for row, options in predictions:
            output = os.path.join(os.path.dirname(path), f"fold_{fold}_pred_{row}")
            command = self.workspace.predict_command(model, os.path.join(raw, "imagesTs"), output,
                                                     self.profile.device, options=options)
            rows[row] = dice_per_case(self.workspace.predict(command, f"predict_{tag}_{row}"),
                                      os.path.join(raw, "labelsTs"))
        with open(os.path.join(raw, "case_centers.json")) as f:
            centers = json.load(f)
        result = {"table": self.table.number, "cell": asdict(cell), "fold": fold, "trainer": model.trainer,
                  "dataset_id": dataset_id, "dice": rows, "case_centers": {c: centers[c] for c in rows["all"]},
                  "profile": asdict(self.profile), "provenance": provenance(seed=seed),
                  "timing": {"started": started, "finished": time.time(), "host": socket.gethostname()}}
        write_json_files({path: result})  # complete or absent: a finished run is one that has its file
        return result

    def prepare(self) -> None:
        """Every dataset the selected cells train on, derived, planned and preprocessed: done once, before the
        trainings run as parallel jobs (which would otherwise race to preprocess the same dataset)."""
        for variant in dict.fromkeys(c.dataset_variant for c in self.cells):
            self.dataset(variant)

    def job_stages(self) -> List[List[Task]]:
        """The unfinished runs as jobs (nnunet_ext.experiments.jobs): the datasets first, then one job per
        (cell, run) that trains, predicts and evaluates it; fold-major, so an interrupted grid already covers
        every cell."""
        self.finished_results()  # a finished run of another profile stops here, before any job
        pending = self._pending()
        if not pending:
            return []
        return [[Task(f"Table {self.table.number}: datasets", self, "prepare")],
                [Task(self._job_name(cell, fold), self, "run_cell", cell, fold)
                 for cell, fold in pending]]

    def progress_line(self, method: str, *args) -> Optional[str]:
        """For the jobs' progress lines: how far a `run_cell` job's training is (None once it has trained)."""
        if method != "run_cell":
            return None
        cell, fold = args
        dataset_id = DATASET_IDS[(self.table.number, cell.dataset_variant)]
        raw = self.workspace.raw_dataset(dataset_id)
        if raw is None:
            return "preparing"
        model = self.model(cell, fold, dataset_id, raw)
        if self.workspace.is_trained(model):
            return None
        progress = fold_progress(self.workspace.fold_folder(model), self.profile.epochs)
        return progress.line() if progress else "starting"

    def _pending(self) -> List[Tuple[Cell, int]]:
        """The (cell, fold) pairs without a result, fold-major."""
        return [(cell, fold) for fold in range(self.runs) for cell in self.cells
                if not os.path.isfile(self.result_path(cell, fold))]

    def _job_name(self, cell: Cell, fold: int) -> str:
        return f"Table {self.table.number}: {cell.key} fold {fold}"

    def missing_runs(self) -> List[str]:
        """The (cell, run) pairs without a result, named as their jobs are."""
        return [self._job_name(cell, fold) for cell, fold in self._pending()]

    def finished_results(self) -> List[Dict]:
        return [self.run_cell(c, f) for f in range(self.runs) for c in self.cells
                if os.path.isfile(self.result_path(c, f))]


def results_by_cell(results: Iterable[Dict]) -> Dict[str, List[Dict]]:
    grouped: Dict[str, List[Dict]] = {}
    for result in results:
        grouped.setdefault(result["cell"]["key"], []).append(result)
    return grouped
