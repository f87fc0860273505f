"""GPU check of the paths a GPU user of our trainers runs, in one script, in under 8 minutes on one GPU.

    python benchmarks/gpu_check.py [--profile auto|gpu|ci] [--workdir DIR] [--budget-s 450]

Builds the synthetic stroke cohort (501) and clot cohort (502), runs the stock nnUNetv2_plan_and_preprocess and
our plans, then, in this process:
  1. families: nnUNetTrainer and each family (NoDropout, MultiUnet, GradualDrop, ModDropPlus, ModDropPlusPlus on
     the stroke cohort; UpAttLLSTM on the clot cohort, against nnUNetTrainer on that cohort) train 2 epochs of a
     few iterations, each epoch followed by one validation step, with nnUNet_compile off and on. Reported: median
     step time of the second epoch and its ratio to nnUNetTrainer on the same data and compile setting, the
     first step (where compilation happens), peak GPU memory, and the torch.compile recompilations that
     TORCH_LOGS=recompiles reports (they must stay under dynamo's recompile limit, beyond which it falls back to
     eager without a word);
  2. ModDrop++ under AMP: 50 train steps, every loss finite and no step skipped by the grad scaler (an inf/NaN
     gradient halves the scale);
  3. UpAttLLSTM at Table-4 size (the paper's sizes, 12 x 256 x 256 crops, 2 images x 4 crops): 3 train steps;
  4. one stroke test case predicted on CUDA and on CPU from the same ModDropPlus checkpoint (trained in part 1):
     Dice between the two segmentations >= 0.99, their probabilities within PROBABILITY_TOLERANCE everywhere,
     and some foreground (two empty segmentations agree trivially: that fails).
Parts run in that order of priority, compile-on runs last; a part that would start with less than
MIN_PART_S of --budget-s left is skipped and reported as such, so the whole stays under the budget.

Without CUDA the CI-sized form runs (--profile ci; chosen by auto): small cohorts and CPU plans, compile off
only (nnU-Net itself disables torch.compile on CPU), a few fp32 ModDrop++ steps (nnU-Net runs no autocast on
CPU), one Table-4 step of one 2 x 256 x 256 crop, and no CUDA/CPU comparison; the report says which parts were skipped.
Writes benchmarks/results/gpu_check.{md,csv,json}.
"""
import argparse
import contextlib
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch

from gpu_measurements import (BASELINE, fetch_batches, make_trainer, moddrop_plus_plus_amp, predict_cuda_and_cpu,
                              recompile_limit, train_family, upattllstm_table4)
from gpu_report import ratio_to_baseline, render_markdown, verdicts

HERE = os.path.dirname(os.path.abspath(__file__))
STROKE_FAMILIES = ("nnUNetTrainerNoDropout", "nnUNetTrainerMultiUnet_p05", "nnUNetTrainerGradualDrop_p05",
                   "nnUNetTrainerModDropPlus_p05", "nnUNetTrainerModDropPlusPlus_p05")
CLOT_FAMILIES = ("nnUNetTrainerUpAttLLSTM",)
PREDICTION_TRAINER = "nnUNetTrainerModDropPlus_p05"
STROKE, CLOT = "Dataset501_SyntheticStroke", "Dataset502_SyntheticClot"
UPATTLLSTM_PLANS = "nnUNetPlans_UpAttLLSTM"
MIN_PART_S = 60  # a part needs about this much of the budget left to start (a compile-on run takes ~30-60 s)


@dataclass(frozen=True)
class CheckSizes:
    """How large the check runs: `gpu` on one GPU in the budget, `ci` the same paths on CPU in CI."""
    name: str
    stroke_size: int          # synthetic cohort field of view (mm = voxels)
    clot_size: int
    train_per_center: int
    iterations: int           # train steps per epoch
    amp_steps: int
    table4_slices: int        # the paper's 12; fewer on CPU
    table4_steps: int
    table4_full_batch: bool   # Table 4's 2 images x 4 crops; on CPU 1 crop
    stroke_plans: str         # plans the stroke families and their baseline train with
    clot_baseline_plans: str  # plans of nnUNetTrainer on the clot cohort
    upattllstm_template: str  # template of nnunet_ext_plan_upattllstm


SIZES = {
    "gpu": CheckSizes("gpu", stroke_size=48, clot_size=64, train_per_center=3, iterations=5, amp_steps=50,
                   table4_slices=12, table4_steps=3, table4_full_batch=True, stroke_plans="nnUNetPlans",
                   clot_baseline_plans="nnUNetPlans", upattllstm_template="upattllstm"),
    "ci": CheckSizes("ci", stroke_size=32, clot_size=32, train_per_center=2, iterations=2, amp_steps=4,
                  table4_slices=2, table4_steps=1, table4_full_batch=False, stroke_plans="nnUNetPlans_CPU",
                  clot_baseline_plans="nnUNetPlans_CPU", upattllstm_template="upattllstm_cpu"),
}


class Budget:
    """Wall-clock budget of the whole check: a part starts only with MIN_PART_S left."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock, self.started = seconds, clock, clock()

    def left(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def allows(self, needed: float = MIN_PART_S) -> bool:
        return self.left() >= needed


# ---------------------------------------------------------------------------------------------- preparation

def prepare(workspace, profile: CheckSizes) -> None:
    """Cohorts, stock plan_and_preprocess and our plans (kept in the workspace; a rerun reuses them)."""
    from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
    from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
    processes = max(1, min(8, (os.cpu_count() or 2) // 2))
    preprocessed, raw = workspace.paths["nnUNet_preprocessed"], workspace.paths["nnUNet_raw"]
    if not os.path.isfile(os.path.join(preprocessed, STROKE, f"{profile.stroke_plans}.json")):
        write_cohort(CohortSpec(train_per_center=profile.train_per_center, test_per_center=1,
                                size=profile.stroke_size), raw, progress=False)
        workspace.plan_and_preprocess(501, processes=processes)
        workspace.run(["nnunet_ext_plan_cpu", "-d", "501"], "plan_cpu_501")
    if not os.path.isfile(os.path.join(preprocessed, CLOT, f"{UPATTLLSTM_PLANS}.json")):
        write_clot_cohort(ClotCohortSpec(train_per_center=profile.train_per_center, test_per_center=1,
                                         size=profile.clot_size), raw, overwrite=True, progress=False)
        workspace.plan_and_preprocess(502, processes=processes)
        workspace.run(["nnunet_ext_plan_cpu", "-d", "502"], "plan_cpu_502")
        workspace.run(["nnunet_ext_plan_upattllstm", "-d", "502", "-t", profile.upattllstm_template],
                      "plan_upattllstm_502")


def _load(preprocessed: str, dataset: str, plans_name: str):
    import json
    folder = os.path.join(preprocessed, dataset)
    with open(os.path.join(folder, f"{plans_name}.json")) as f:
        plans = json.load(f)
    with open(os.path.join(folder, "dataset.json")) as f:
        dataset_json = json.load(f)
    return plans, dataset_json

# ---------------------------------------------------------------------------------------------- main

@contextlib.contextmanager
def scoped_environment(values: Dict[str, str]) -> Iterator[None]:
    """os.environ with `values` for the block, restored after it: nnU-Net reads its folders and flags from this
    process's environment, and a caller's own settings must survive the check."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_check(profile: CheckSizes, workdir: str, budget_s: float, device: torch.device,
              command: str, note: str = "") -> Dict:
    from nnunet_ext.experiments.workspace import Workspace
    budget = Budget(budget_s)
    workspace = Workspace(workdir, {"nnUNet_n_proc_DA": "0"})
    paths, env = workspace.paths, workspace.env
    prepare(workspace, profile)
    # batches are fetched once, in process (no augmentation workers); make_trainer switches nnUNet_compile
    with scoped_environment({**{k: env[k] for k in (*paths, "nnUNet_extTrainer")}, "nnUNet_n_proc_DA": "0",
                             "nnUNet_compile": "false"}):
        return _run_parts(profile, paths, budget, device, command, note)


@dataclass(frozen=True)
class TrainerGroup:
    """Trainers that train on one (plans, dataset.json) with the same batches: `dataset` labels the report's rows
    (nnUNetTrainer's ratio is taken within a dataset), the batches come from the first trainer's own loader."""
    dataset: str
    plans: dict
    dataset_json: dict
    trainers: Sequence[str]
    batches: Sequence[dict] = ()


@dataclass
class CheckState:
    """What the parts share: the device, the trainer groups by name ("stroke", "clot", "upattllstm"), the trainer
    the prediction part predicts with, and the results every part adds to."""
    sizes: CheckSizes
    device: torch.device
    raw: str
    groups: Dict[str, TrainerGroup]
    results: Dict
    rows: List[Dict] = field(default_factory=list)
    trained: Dict[str, object] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def train_families(state: CheckState, compile_network: bool, budget: "Budget") -> None:
    """Part 1: every family of every group, each after a budget check of its own (a family is the unit of work)."""
    for group in state.groups.values():
        for name in group.trainers:
            label = f"{name} ({group.dataset}, compile {'on' if compile_network else 'off'})"
            if not budget.allows():
                state.results["skipped"].append(f"{label}: time budget")
                continue
            row = train_family(name, group.plans, group.dataset_json, group.batches, state.device, compile_network)
            trainer = row.pop("_trainer")
            if name == PREDICTION_TRAINER and not compile_network:
                state.trained[name] = trainer
            state.rows.append({"dataset": group.dataset, **row})
            print(f"{label}: median step {row['median_step_s']:.4f} s, recompiles {row['recompiles']}", flush=True)


def _first_test_case(raw: str) -> str:
    return sorted(f[:-12] for f in os.listdir(os.path.join(raw, STROKE, "imagesTs")) if f.endswith("_0000.nii.gz"))[0]


@dataclass(frozen=True)
class Part:
    """One part of the check: `run` adds its results to the state; `unavailable` says why it cannot run here
    (None: it can); `caveat` says what a run here leaves out (None: nothing)."""
    label: str
    run: Callable[[CheckState, "Budget"], None]
    unavailable: Callable[[CheckState], Optional[str]] = lambda state: None
    caveat: Callable[[CheckState], Optional[str]] = lambda state: None
    budgets_itself: bool = False   # checks the budget per unit inside `run`


def _set(key: str, compute: Callable[[CheckState], Dict]) -> Callable[[CheckState, "Budget"], None]:
    def run(state: CheckState, budget: "Budget") -> None:
        state.results[key] = compute(state)
    return run


# in order of priority; the compile-on runs last (they cost the most and only a GPU has them)
PARTS = (
    Part("families, compile off", lambda s, b: train_families(s, False, b), budgets_itself=True),
    Part("ModDrop++ AMP steps",
         _set("amp", lambda s: moddrop_plus_plus_amp(s.groups["stroke"].plans, s.groups["stroke"].dataset_json,
                                                     s.groups["stroke"].batches, s.device, s.sizes.amp_steps)),
         caveat=lambda s: None if s.cuda else (f"ModDrop++ under AMP: no CUDA (nnU-Net runs no autocast on CPU); "
                                               f"{s.sizes.amp_steps} float32 steps ran instead")),
    Part("UpAttLLSTM Table-4 steps",
         _set("table4", lambda s: upattllstm_table4(s.groups["upattllstm"].plans, s.groups["upattllstm"].dataset_json,
                                                    s.device, s.sizes.table4_slices,
                                                    s.sizes.table4_steps, s.sizes.table4_full_batch)),
         caveat=lambda s: None if s.sizes.table4_slices == 12 and s.sizes.table4_full_batch else (
             f"UpAttLLSTM at the full Table-4 batch: on CPU {s.sizes.table4_steps} step of 1 crop of "
             f"{s.sizes.table4_slices} x 256 x 256 (Table 4: 3 steps of 2 images x 4 crops of 12 x 256 x 256)")),
    Part("prediction on CUDA vs CPU",
         _set("prediction", lambda s: predict_cuda_and_cpu(s.trained[PREDICTION_TRAINER], os.path.join(s.raw, STROKE),
                                                           _first_test_case(s.raw))),
         unavailable=lambda s: ("no CUDA" if not s.cuda else
                                None if PREDICTION_TRAINER in s.trained else f"{PREDICTION_TRAINER} was not trained")),
    Part("families, compile on", lambda s, b: train_families(s, True, b), budgets_itself=True,
         unavailable=lambda s: None if s.cuda else ("nnU-Net disables torch.compile on CPU (_do_i_compile), so the "
                                                    "recompile counts need a GPU")),
)


def run_parts(state: CheckState, budget: "Budget", parts: Sequence[Part] = PARTS) -> None:
    """Each part in turn; one that cannot run here, or would start with too little budget, is named in Skipped."""
    for part in parts:
        reason = part.unavailable(state)
        if reason is None and not part.budgets_itself and not budget.allows():
            reason = "time budget"
        if reason is not None:
            state.results["skipped"].append(f"{part.label}: {reason}")
            continue
        part.run(state, budget)
        caveat = part.caveat(state)
        if caveat is not None:
            state.results["skipped"].append(caveat)


def _run_parts(sizes: CheckSizes, paths: Dict[str, str], budget: "Budget", device: torch.device, command: str,
               note: str) -> Dict:
    from nnunet_ext.provenance import provenance
    cuda = device.type == "cuda"
    results: Dict = {"profile": asdict(sizes), "budget_s": budget.seconds, "recompile_limit": recompile_limit(),
                     "skipped": [], "note": note,
                     "device": {"type": device.type, "description": (torch.cuda.get_device_name(device) if cuda else
                                f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})")}}
    preprocessed = paths["nnUNet_preprocessed"]
    groups = {"stroke": TrainerGroup("stroke", *_load(preprocessed, STROKE, sizes.stroke_plans),
                                     [BASELINE, *STROKE_FAMILIES]),
              "clot": TrainerGroup("clot", *_load(preprocessed, CLOT, sizes.clot_baseline_plans), [BASELINE]),
              "upattllstm": TrainerGroup("clot", *_load(preprocessed, CLOT, UPATTLLSTM_PLANS), CLOT_FAMILIES)}
    # nnUNetTrainer's loader for the U-Nets (deep supervision targets); the clot trainer's own pair loader
    groups = {key: replace(group, batches=fetch_batches(make_trainer(group.trainers[0], group.plans,
                                                                     group.dataset_json, torch.device("cpu"), False),
                                                        sizes.iterations))
              for key, group in groups.items()}
    state = CheckState(sizes, device, paths["nnUNet_raw"], groups, results)
    run_parts(state, budget)
    for row in state.rows:
        row["ratio_to_baseline"] = ratio_to_baseline(row, state.rows)
    results["families"] = state.rows
    results["wall_s"] = round(budget.seconds - budget.left(), 1)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # other jobs distort step times
    results["verdicts"] = verdicts(results)
    results["provenance"] = provenance(seed=0, command=command)
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["auto", *SIZES], default="auto",
                        help="auto: gpu with CUDA, else ci")
    parser.add_argument("--workdir", default=None, help="reused between runs (keeps the preprocessed cohorts)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of the whole check")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu_check"))
    parser.add_argument("--note", default="", help="a remark for the report, e.g. why no GPU was used")
    args = parser.parse_args(argv)

    from nnunet_ext.experiments.records import write_table_files
    cuda = torch.cuda.is_available()
    profile = SIZES[args.profile if args.profile != "auto" else ("gpu" if cuda else "ci")]
    device = torch.device("cuda" if cuda else "cpu")
    workdir = args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_gpu_check_")
    os.makedirs(workdir, exist_ok=True)
    command = shlex.join(["python", os.path.relpath(os.path.abspath(sys.argv[0]))] + list(argv or sys.argv[1:]))
    results = run_check(profile, workdir, args.budget_s, device, command, args.note)
    csv_rows = [{k: v for k, v in row.items() if k != "recompile_reasons"} for row in results["families"]] or \
        [{"trainer": "-"}]
    paths = write_table_files(args.out, render_markdown(results), csv_rows, results)
    print(open(paths["md"]).read())
    failed = [name for name, ok in results["verdicts"].items() if not ok]
    if failed:
        sys.exit(f"gpu_check: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
