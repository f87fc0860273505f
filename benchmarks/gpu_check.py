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
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE = "nnUNetTrainer"
STROKE_FAMILIES = ("nnUNetTrainerNoDropout", "nnUNetTrainerMultiUnet_p05", "nnUNetTrainerGradualDrop_p05",
                   "nnUNetTrainerModDropPlus_p05", "nnUNetTrainerModDropPlusPlus_p05")
CLOT_FAMILIES = ("nnUNetTrainerUpAttLLSTM",)
PREDICTION_TRAINER = "nnUNetTrainerModDropPlus_p05"
STROKE, CLOT = "Dataset501_SyntheticStroke", "Dataset502_SyntheticClot"
UPATTLLSTM_PLANS = "nnUNetPlans_UpAttLLSTM"
EPOCHS = 2
MIN_PART_S = 60  # a part needs about this much of the budget left to start (a compile-on run takes ~30-60 s)
DICE_TARGET = 0.99
# CUDA vs CPU probabilities of one checkpoint: cuDNN may run float32 convolutions in TF32 (10-bit mantissa), so
# they differ by more than rounding, but a softmax that moves by more than this somewhere is another network.
# Set before any GPU run; the report gives the measured value.
PROBABILITY_TOLERANCE = 0.05


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


# ---------------------------------------------------------------------------------------------- pure pieces

class RecompileCounter(logging.Handler):
    """Counts torch.compile recompilations: the records of dynamo's 'recompiles' log artifact, the messages
    TORCH_LOGS=recompiles prints ("Recompiling function ... triggered by the following guard failure(s)")."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.reasons: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        lines = record.getMessage().splitlines()
        if lines and lines[0].startswith("Recompiling function"):
            # the function and the first guard that failed say why; the full text is on stderr
            self.reasons.append(" / ".join(line.strip() for line in lines[:1] + lines[2:3]))

    @property
    def count(self) -> int:
        return len(self.reasons)


@contextlib.contextmanager
def counting_recompiles() -> Iterator[RecompileCounter]:
    """Turn on TORCH_LOGS=recompiles for the block (the log still reaches stderr) and count what it logs."""
    import torch._dynamo.guards as guards
    counter = RecompileCounter()
    torch._logging.set_logs(recompiles=True)  # what TORCH_LOGS=recompiles sets; resets torch's log handlers
    logger = getattr(guards, "recompiles_log", None) or logging.getLogger("torch._dynamo.guards.__recompiles")
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        torch._logging.set_logs()


def recompile_limit() -> int:
    """Dynamo's per-function cache limit: past it, the function silently runs eagerly."""
    config = torch._dynamo.config
    return int(getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 8)))


class ScalerStepCounter:
    """Counts optimizer steps a GradScaler skipped: update() lowers the scale exactly when it found inf/NaN
    gradients and skipped the step."""

    def __init__(self, scaler):
        self.scaler = scaler
        self.steps = 0
        self.skipped = 0

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        before = self.scaler.get_scale() if self.scaler is not None and self.scaler.is_enabled() else None
        yield
        self.steps += 1
        if before is not None and self.scaler.get_scale() < before:
            self.skipped += 1


def segmentation_dice(a: np.ndarray, b: np.ndarray) -> Dict:
    """Dice between two label maps' foreground (the project's rule: 1.0 when both are empty), and whether they
    were, since two empty predictions agree trivially."""
    from nnunet_ext.evaluation.metrics import dice
    return {"dice": float(dice(a > 0, b > 0)), "foreground_voxels": [int((a > 0).sum()), int((b > 0).sum())],
            "both_empty": bool(not (a > 0).any() and not (b > 0).any())}


class Budget:
    """Wall-clock budget of the whole check: a part starts only with MIN_PART_S left."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock, self.started = seconds, clock, clock()

    def left(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def allows(self, needed: float = MIN_PART_S) -> bool:
        return self.left() >= needed


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> Optional[float]:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1) if device.type == "cuda" else None


def _copy(batch: dict) -> dict:
    """train_step may drop channels in place: every trainer gets its own copy of a batch."""
    target = batch["target"]
    return {**batch, "data": batch["data"].clone(),
            "target": [t.clone() for t in target] if isinstance(target, list) else target.clone()}


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


# ---------------------------------------------------------------------------------------------- parts

def make_trainer(name: str, plans: dict, dataset_json: dict, device: torch.device, compile_network: bool):
    """The trainer nnUNetv2_train builds, initialised (network, optimizer, loss; compiled if asked)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_ext.training.variants import trainer_variant
    os.environ["nnUNet_compile"] = "true" if compile_network else "false"  # read by initialize()
    torch.manual_seed(0)
    cls = nnUNetTrainer if name == BASELINE else trainer_variant(name)
    trainer = cls(plans={**plans, "continue_training": False}, configuration="3d_fullres", fold=0,
                  dataset_json=dataset_json, device=device)
    trainer.initialize()
    return trainer


def fetch_batches(trainer, count: int) -> List[dict]:
    """`count` augmented training batches from the trainer's own loader (reused by every trainer of a kind)."""
    loader, _ = trainer.get_dataloaders()
    return [next(loader) for _ in range(count)]


def train_family(name: str, plans: dict, dataset_json: dict, batches: Sequence[dict], device: torch.device,
                 compile_network: bool) -> Dict:
    """EPOCHS epochs of len(batches) train steps, then one validation step each, as nnUNetTrainer runs them."""
    import torch._dynamo
    torch._dynamo.reset()  # each run compiles afresh, so its recompiles are its own
    with counting_recompiles() as recompiles:
        trainer = make_trainer(name, plans, dataset_json, device, compile_network)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step_s: List[List[float]] = []
        losses: List[float] = []
        for epoch in range(EPOCHS):
            trainer.current_epoch = epoch
            trainer.on_train_epoch_start()
            step_s.append([])
            for batch in batches:
                batch = _copy(batch)
                _synchronize(device)
                started = time.perf_counter()
                losses.append(float(trainer.train_step(batch)["loss"]))
                _synchronize(device)
                step_s[-1].append(time.perf_counter() - started)
            trainer.on_validation_epoch_start()
            validation = trainer.validation_step(_copy(batches[0]))
            losses.append(float(validation["loss"]))
    compiled = trainer._do_i_compile()
    return {"trainer": name, "compile": compiled, "median_step_s": round(statistics.median(step_s[-1]), 5),
            "first_step_s": round(step_s[0][0], 3), "peak_memory_mb": _peak_memory_mb(device),
            "recompiles": recompiles.count if compiled else None,
            "recompile_reasons": recompiles.reasons[:10],
            "losses_finite": all(math.isfinite(v) for v in losses), "_trainer": trainer}


def moddrop_plus_plus_amp(plans: dict, dataset_json: dict, batches: Sequence[dict], device: torch.device,
                          steps: int) -> Dict:
    """`steps` ModDrop++ train steps (nnU-Net's autocast + GradScaler on CUDA): losses finite, none skipped."""
    trainer = make_trainer("nnUNetTrainerModDropPlusPlus_p05", plans, dataset_json, device, False)
    trainer.on_train_epoch_start()
    counter = ScalerStepCounter(trainer.grad_scaler)
    losses = []
    for step in range(steps):
        with counter.step():
            losses.append(float(trainer.train_step(_copy(batches[step % len(batches)]))["loss"]))
    return {"steps": counter.steps, "amp": trainer.grad_scaler is not None, "skipped_scaler_steps": counter.skipped,
            "losses_finite": all(math.isfinite(v) for v in losses), "first_loss": round(losses[0], 4),
            "last_loss": round(losses[-1], 4),
            "final_scale": trainer.grad_scaler.get_scale() if trainer.grad_scaler is not None else None}


def upattllstm_table4(clot_plans: dict, dataset_json: dict, device: torch.device, slices: int, steps: int,
                      full_batch: bool = True) -> Dict:
    """`steps` train steps of nnUNetTrainerUpAttLLSTM with the paper's sizes (Table 4: 256 x 256 slices, batch of
    2 images x 4 crops) on random crops; `full_batch=False`: one crop (the CPU form)."""
    from nnunet_ext.networks.clot_networks import count_parameters
    from nnunet_ext.planning.templates import load_template
    from nnunet_ext.planning.upattllstm_plans import derive_upattllstm_plans
    # the plans nnunet_ext_plan_upattllstm writes for data large enough that nothing is clipped
    source = {**clot_plans, "configurations": {"3d_fullres": {
        **clot_plans["configurations"]["3d_fullres"], "median_image_size_in_voxels": [slices, 256, 256]}}}
    template = {**load_template("upattllstm"), "patch_size": [slices, 256, 256]}
    if not full_batch:
        template.update(batch_size=1, crops_per_image=1)
    plans = derive_upattllstm_plans(source, dataset_json, template)
    trainer = make_trainer("nnUNetTrainerUpAttLLSTM", plans, dataset_json, device, False)
    trainer.on_train_epoch_start()
    # what the trainer's loader hands train_step: batch_size images x crops_per_image crops of the training patch
    patch = trainer.training_patch_size
    batch_size = trainer.batch_size * trainer.crops_per_image
    generator = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s, losses = [], []
    for _ in range(steps):
        data = torch.randn(batch_size, 3, *patch, generator=generator)
        target = (data[:, :1] > 2.0).float()  # a few bright DWI voxels as the "clot"
        _synchronize(device)
        started = time.perf_counter()
        losses.append(float(trainer.train_step({"data": data, "target": target})["loss"]))
        _synchronize(device)
        step_s.append(time.perf_counter() - started)
    return {"patch_size": patch, "batch_size": batch_size, "parameters": count_parameters(trainer.network),
            "steps": steps, "step_s": [round(s, 3) for s in step_s], "peak_memory_mb": _peak_memory_mb(device),
            "losses_finite": all(math.isfinite(v) for v in losses)}


def predict_cuda_and_cpu(trainer, raw_dataset: str, case: str) -> Dict:
    """Save `trainer` as nnUNetv2_train would, then predict `case` with nnUNetPredictor on CUDA and on CPU."""
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    os.makedirs(trainer.output_folder, exist_ok=True)
    save_json(trainer.plans_manager.plans, os.path.join(trainer.output_folder_base, "plans.json"), sort_keys=False)
    save_json(trainer.dataset_json, os.path.join(trainer.output_folder_base, "dataset.json"), sort_keys=False)
    trainer.save_checkpoint(os.path.join(trainer.output_folder, "checkpoint_final.pth"))
    channels = len(trainer.dataset_json["channel_names"])
    files = [os.path.join(raw_dataset, "imagesTs", f"{case}_{c:04d}.nii.gz") for c in range(channels)]
    image, properties = SimpleITKIO().read_images(files)
    outputs = {}
    for device in ("cuda", "cpu"):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=device == "cuda", device=torch.device(device),
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(trainer.output_folder_base, use_folds=(0,))
        segmentation, probabilities = predictor.predict_single_npy_array(image, dict(properties), None, None, True)
        outputs[device] = (np.asarray(segmentation), np.asarray(probabilities, dtype=np.float32))
    result = segmentation_dice(outputs["cuda"][0], outputs["cpu"][0])
    result["max_abs_probability_difference"] = float(np.abs(outputs["cuda"][1] - outputs["cpu"][1]).max())
    result["case"] = case
    return result


# ---------------------------------------------------------------------------------------------- report

def verdicts(results: Dict) -> Dict[str, bool]:
    """Pass/fail of every check that ran."""
    out = {}
    for row in results.get("families", []):
        key = f"{row['trainer']} ({'compile' if row['compile'] else 'eager'})"
        ok = row["losses_finite"]
        if row["recompiles"] is not None:
            ok = ok and row["recompiles"] < results["recompile_limit"]
        out[key] = ok
    if "amp" in results:
        amp = results["amp"]
        out["ModDrop++ steps"] = amp["losses_finite"] and amp["skipped_scaler_steps"] == 0
    if "table4" in results:
        out["UpAttLLSTM Table-4 steps"] = results["table4"]["losses_finite"]
    if "prediction" in results:
        out["CUDA vs CPU prediction"] = prediction_agrees(results["prediction"])
    return out


def prediction_agrees(prediction: Dict) -> bool:
    """CUDA and CPU predicted the same: segmentations with some foreground and Dice >= DICE_TARGET, and
    probabilities that differ by at most PROBABILITY_TOLERANCE (a short training often predicts nothing, and two
    empty segmentations, Dice 1 by our rule, would compare nothing)."""
    return (not prediction["both_empty"] and prediction["dice"] >= DICE_TARGET
            and prediction["max_abs_probability_difference"] <= PROBABILITY_TOLERANCE)


def _ratio(row: Dict, rows: Sequence[Dict]) -> Optional[float]:
    baseline = [r for r in rows if r["trainer"] == BASELINE and r["compile"] == row["compile"]
                and r["dataset"] == row["dataset"]]
    return round(row["median_step_s"] / baseline[0]["median_step_s"], 3) if baseline else None


def render_markdown(results: Dict) -> List[str]:
    device = results["device"]
    lines = ["# GPU check: our trainers on the GPU path", "",
             f"Command: `{results['provenance']['command']}`; profile `{results['profile']['name']}`; device: "
             f"{device['description']}; {results['wall_s']:.0f} s in all (budget {results['budget_s']:.0f} s).", ""]
    if device["type"] != "cuda":
        note = f" ({results['note']})" if results.get("note") else ""
        load = results.get("load_average_at_end")
        lines += [f"**Run on CPU only: no GPU was available{note}. The CUDA parts were not run; see Skipped.**", "",
                  "On CPU this checks that every path runs and its losses stay finite; with a couple of steps per "
                  "trainer the step times say nothing about speed (benchmarks/step_time.py measures that)"
                  + (f"; load average at the end {', '.join(f'{x:.1f}' for x in load)}" if load else "") + ".", ""]
    rows = results.get("families", [])
    if rows:
        lines += [f"## Families: {EPOCHS} epochs x {results['profile']['iterations']} iterations (+1 validation step "
                  "per epoch)", "",
                  "| dataset | trainer | torch.compile | median step s (epoch 2) | vs nnUNetTrainer | first step s | "
                  "peak GPU MB | recompiles | losses finite |", "|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            recompiles = "-" if row["recompiles"] is None else str(row["recompiles"])
            memory = "-" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.0f}"
            lines.append(f"| {row['dataset']} | {row['trainer']} | {'on' if row['compile'] else 'off'} | "
                         f"{row['median_step_s']:.4f} | {row['ratio_to_baseline']} | {row['first_step_s']:.2f} | "
                         f"{memory} | {recompiles} | {row['losses_finite']} |")
        lines += ["", f"Recompiles must stay below dynamo's limit ({results['recompile_limit']}); the reasons are "
                      "in the JSON file.", ""]
    if "amp" in results:
        amp = results["amp"]
        lines += ["## ModDrop++ " + ("under AMP" if amp["amp"] else "in float32 (no AMP on CPU)"), "",
                  f"{amp['steps']} steps: losses finite {amp['losses_finite']}, skipped scaler steps "
                  f"{amp['skipped_scaler_steps']}, loss {amp['first_loss']} -> {amp['last_loss']}"
                  + (f", final scale {amp['final_scale']:g}" if amp["final_scale"] is not None else "") + ".", ""]
    if "table4" in results:
        t4 = results["table4"]
        memory = "" if t4["peak_memory_mb"] is None else f", peak GPU memory {t4['peak_memory_mb']:.0f} MB"
        lines += ["## UpAttLLSTM at Table-4 size", "",
                  f"Patch {t4['patch_size']}, batch {t4['batch_size']}, {t4['parameters']:,} parameters: "
                  f"{t4['steps']} train step(s) of {', '.join(f'{s:.2f}' for s in t4['step_s'])} s{memory}; "
                  f"losses finite {t4['losses_finite']}.", ""]
    if "prediction" in results:
        p = results["prediction"]
        lines += ["## One case predicted on CUDA and on CPU, same checkpoint", "",
                  f"{p['case']}: Dice {p['dice']:.4f} (target >= {DICE_TARGET}), foreground voxels "
                  f"{p['foreground_voxels']}{' (both empty: nothing compared, a failure)' if p['both_empty'] else ''}, "
                  f"max |probability difference| {p['max_abs_probability_difference']:.4f} (tolerance "
                  f"{PROBABILITY_TOLERANCE}).", ""]
    checks = verdicts(results)
    lines += ["## Verdict", ""] + [f"- {name}: {'pass' if ok else 'FAIL'}" for name, ok in checks.items()]
    lines += ["", "## Skipped", ""] + ([f"- {item}" for item in results["skipped"]] or ["- nothing"])
    lines += ["", f"Versions: {results['provenance']['versions']}", ""]
    return lines


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


@dataclass
class CheckState:
    """What the parts share: the device, the three (plans, dataset.json) groups with their batches, the trainer
    part 4 predicts with, and the results every part adds to."""
    sizes: CheckSizes
    device: torch.device
    raw: str
    groups: List[Tuple[str, Tuple[dict, dict], List[str]]]
    batches: Dict[int, List[dict]]
    results: Dict
    rows: List[Dict] = field(default_factory=list)
    trained: Dict[str, object] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def train_families(state: CheckState, compile_network: bool, budget: "Budget") -> None:
    """Part 1: every family of every group, each after a budget check of its own (a family is the unit of work)."""
    for index, (dataset, (plans, dataset_json), names) in enumerate(state.groups):
        for name in names:
            label = f"{name} ({dataset}, compile {'on' if compile_network else 'off'})"
            if not budget.allows():
                state.results["skipped"].append(f"{label}: time budget")
                continue
            row = train_family(name, plans, dataset_json, state.batches[index], state.device, compile_network)
            trainer = row.pop("_trainer")
            if name == PREDICTION_TRAINER and not compile_network:
                state.trained[name] = trainer
            state.rows.append({"dataset": dataset, **row})
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
         _set("amp", lambda s: moddrop_plus_plus_amp(*s.groups[0][1], s.batches[0], s.device, s.sizes.amp_steps)),
         caveat=lambda s: None if s.cuda else (f"ModDrop++ under AMP: no CUDA (nnU-Net runs no autocast on CPU); "
                                               f"{s.sizes.amp_steps} float32 steps ran instead")),
    Part("UpAttLLSTM Table-4 steps",
         _set("table4", lambda s: upattllstm_table4(*s.groups[2][1], s.device, s.sizes.table4_slices,
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
    groups = [("stroke", _load(preprocessed, STROKE, sizes.stroke_plans), [BASELINE, *STROKE_FAMILIES]),
              ("clot", _load(preprocessed, CLOT, sizes.clot_baseline_plans), [BASELINE]),
              ("clot", _load(preprocessed, CLOT, UPATTLLSTM_PLANS), list(CLOT_FAMILIES))]
    # nnUNetTrainer's loader for the U-Nets (deep supervision targets); the clot trainer's own pair loader
    batches = {index: fetch_batches(make_trainer(names[0], *plans, torch.device("cpu"), False), sizes.iterations)
               for index, (_, plans, names) in enumerate(groups)}
    state = CheckState(sizes, device, paths["nnUNet_raw"], groups, batches, results)
    run_parts(state, budget)
    for row in state.rows:
        row["ratio_to_baseline"] = _ratio(row, state.rows)
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
