"""Wall time of `nnunet_ext_evaluate` on 100 label volumes of 128³ with lesion-wise matching (target < 10 s).

    python benchmarks/evaluate_speed.py [--cases 100] [--size 128] [--processes 2] [--seed 0] [--workdir DIR]

Writes seeded reference and prediction folders (1-6 ellipsoidal lesions per case on four centers' grids; the
prediction misses some lesions, adds false positives and shifts/grows the rest), then times the command as a
user runs it (a subprocess: start-up, reading, checks, metrics, files written) once per matching rule, plus a
single-process run of the default rule. Writes benchmarks/results/evaluate_speed.{json,md}.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SPACINGS = {"A": (1.0, 1.0, 1.0), "B": (1.5, 1.1, 1.1), "C": (1.2, 1.2, 1.2), "D": (1.0, 1.3, 1.3)}


def _ellipsoid(shape, center, radii) -> np.ndarray:
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    return ((z - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + (
        (x - center[2]) / radii[2]) ** 2 <= 1.0


def make_case(size: int, rng: np.random.Generator):
    """(reference, prediction) uint8 volumes of size³."""
    shape = (size,) * 3
    reference = np.zeros(shape, bool)
    prediction = np.zeros(shape, bool)
    for _ in range(rng.integers(1, 7)):
        center = rng.uniform(0.2, 0.8, 3) * size
        radii = rng.uniform(0.015, 0.08, 3) * size
        reference |= _ellipsoid(shape, center, radii)
        if rng.random() < 0.8:  # detected, a little off and larger or smaller
            prediction |= _ellipsoid(shape, center + rng.normal(0, 1.5, 3), radii * rng.uniform(0.8, 1.2, 3))
    for _ in range(rng.integers(0, 4)):  # false positives
        prediction |= _ellipsoid(shape, rng.uniform(0.1, 0.9, 3) * size, rng.uniform(0.01, 0.03, 3) * size)
    return reference.astype(np.uint8), prediction.astype(np.uint8)


def write_data(workdir: str, cases: int, size: int, seed: int) -> dict:
    from nnunet_ext.data.nifti import write_image
    folders = {k: os.path.join(workdir, k) for k in ("reference", "prediction")}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    centers = {}
    for i in range(cases):
        center = "ABCD"[i % 4]
        case = f"bench_{center}_{i:03d}"
        reference, prediction = make_case(size, np.random.default_rng([seed, i]))
        write_image(os.path.join(folders["reference"], case + ".nii.gz"), reference, SPACINGS[center])
        write_image(os.path.join(folders["prediction"], case + ".nii.gz"), prediction, SPACINGS[center])
        centers[case] = center
    with open(os.path.join(workdir, "case_centers.json"), "w") as f:
        json.dump(centers, f)
    return folders


def time_command(command) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def _markdown(result: dict) -> List[str]:
    headline, cases, size = result["timings"][0], result["cases"], result["shape"][0]
    lines = [f"# `nnunet_ext_evaluate` speed: {cases} volumes of {size}³", "",
             f"Command: `{result['provenance']['command']}` (seed {result['seed']})", "",
             "Each row runs `nnunet_ext_evaluate PRED REF --centers case_centers.json -o OUT --matching RULE "
             "-np N --quiet` as a subprocess (Python start-up, reading, checks, metrics and files included).", "",
             "| matching | processes | wall (s) | per case (ms) | mean Dice | mean lesion F1 | pooled TP/FP/FN |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {t['matching']} | {t['processes']} | {t['wall_s']} | {t['per_case_ms']} | {t['mean_dice']} | "
              f"{t['mean_lesion_f1']} | {'/'.join(map(str, t['pooled_tp_fp_fn']))} |" for t in result["timings"]]
    return lines + ["", f"Target < {result['target_s']:g} s on 2 cores for the default rule (any overlap, "
                        f"{result['processes']} processes): **{headline['wall_s']} s** "
                        f"({'met' if result['passes'] else 'missed'}). Import start-up alone: "
                        f"{result['import_startup_s']} s. CPU: {result['machine']['cpu_count']} cores "
                        f"({result['machine']['processor']}), 1-min load average before the run "
                        f"{result['machine']['load_average_1min_before']}.",
                    f"Versions: {result['provenance']['versions']}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "evaluate_speed"))
    args = parser.parse_args()

    from nnunet_ext.experiments.records import write_table_files
    from nnunet_ext.provenance import provenance
    workdir = args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_eval_bench_")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    folders = write_data(workdir, args.cases, args.size, args.seed)
    generation_s = time.perf_counter() - started

    base = ["nnunet_ext_evaluate", folders["prediction"], folders["reference"], "--centers",
            os.path.join(workdir, "case_centers.json"), "--quiet"]
    runs = [("any", args.processes, []), ("iou", args.processes, ["--iou", "0.1"]),
            ("centroid", args.processes, ["--distance-mm", "10"]), ("any", 1, [])]
    timings = []
    for rule, processes, extra in runs:
        out = os.path.join(workdir, f"out_{rule}_{processes}")
        seconds = time_command(base + ["-o", out, "--matching", rule, "-np", str(processes), *extra])
        summary = json.load(open(os.path.join(out, "summary.json")))["metrics"]["1"]["all"]
        timings.append({"matching": rule, "processes": processes, "wall_s": round(seconds, 2),
                        "per_case_ms": round(1000 * seconds / args.cases, 1),
                        "mean_dice": round(summary["dice"]["mean"], 4),
                        "mean_lesion_f1": round(summary["lesion_f1"]["mean"], 4),
                        "pooled_tp_fp_fn": [summary["pooled"][k] for k in ("tp", "fp", "fn")]})

    # the start-up share of every wall time above: a fresh interpreter importing the command's modules
    startup_s = time_command([sys.executable, "-c", "import nnunet_ext.cli.evaluate"])
    headline = timings[0]
    result = {
        "wall_s_default_rule": headline["wall_s"], "target_s": 10.0, "passes": headline["wall_s"] < 10.0,
        "cases": args.cases, "shape": [args.size] * 3, "processes": args.processes, "seed": args.seed,
        "timings": timings,
        "import_startup_s": round(startup_s, 2), "data_generation_s": round(generation_s, 1),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_1min_before": round(load_before, 2)},
        "provenance": provenance(seed=args.seed, command="python " + " ".join(sys.argv)),
    }
    write_table_files(args.out, _markdown(result), None, result)
    print(json.dumps({k: result[k] for k in ("wall_s_default_rule", "passes", "timings")}, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
