"""The measurements of benchmarks/gpu_check.py: trainers built as nnUNetv2_train builds them, their train steps
timed, torch.compile's recompilations and the grad scaler's skipped steps counted, one case predicted on CUDA and
on CPU. Each returns a plain dict row for the report (gpu_report.py)."""
import contextlib
import logging
import math
import os
import statistics
import time
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

BASELINE = "nnUNetTrainer"
EPOCHS = 2

# ---------------------------------------------------------------------------------------------- counters

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
