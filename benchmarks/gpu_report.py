"""The report of benchmarks/gpu_check.py: a verdict per check that ran, and the markdown page."""
from typing import Dict, List, Optional, Sequence

from gpu_measurements import BASELINE, EPOCHS

DICE_TARGET = 0.99

# CUDA vs CPU probabilities of one checkpoint: cuDNN may run float32 convolutions in TF32 (10-bit mantissa), so
# they differ by more than rounding, but a softmax that moves by more than this somewhere is another network.
# Set before any GPU run; the report gives the measured value.
PROBABILITY_TOLERANCE = 0.05


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


def ratio_to_baseline(row: Dict, rows: Sequence[Dict]) -> Optional[float]:
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
