"""`nnunet_ext_demo`: end-to-end gradual modality dropout on the synthetic cohort, on CPU, with stock nnU-Net.

Steps: generate the cohort -> nnUNetv2_plan_and_preprocess -> derive CPU plans -> nnUNetv2_train with a
gradual-dropout trainer -> nnUNetv2_predict on the test cases with all channels and with ADC absent ->
Dice of both, per center. Everything lives in --workdir; results go to <workdir>/demo_results.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.evaluation.folders import dice_per_case, summarize_by_center
from nnunet_ext.paths import nnunet_environment, nnunet_folders
from nnunet_ext.provenance import provenance


def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def _run(command: List[str], env: Dict[str, str], log_path: str) -> None:
    """Run a stock nnU-Net command, its output going to a log file and its progress lines to the console."""
    print("  $ " + " ".join(command), flush=True)
    started = time.time()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if any(key in line for key in ("Epoch ", "Pseudo dice", "f(t)", "Mean Validation Dice", "predicting",
                                           "Error", "error")):
                print("    " + line.rstrip(), flush=True)
        code = process.wait()
    if code != 0:
        raise SystemExit(f"command failed with exit code {code}; see {log_path}")
    print(f"  done in {time.time() - started:.0f} s", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="nnunet_ext_demo_work")
    parser.add_argument("--trainer", default="nnUNetTrainerGradualDrop_p05_8epochs")
    parser.add_argument("--iterations", type=int, default=40, help="training iterations per epoch")
    parser.add_argument("--val-iterations", type=int, default=4, help="validation iterations per epoch")
    parser.add_argument("--train-per-center", type=int, default=6)
    parser.add_argument("--test-per-center", type=int, default=3)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    workdir = os.path.abspath(args.workdir)
    if os.path.exists(workdir) and os.listdir(workdir):
        sys.exit(f"error: {workdir} exists and is not empty; remove it or pass another --workdir")
    paths = nnunet_folders(workdir)
    env = nnunet_environment(**paths, nnUNet_compile="false", nnUNet_def_n_proc="2",
                             NNUNET_EXT_SEED=str(args.seed),
                             NNUNET_EXT_ITERATIONS_PER_EPOCH=str(args.iterations),
                             NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH=str(args.val_iterations))
    env.setdefault("nnUNet_n_proc_DA", "1")
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs)
    spec = CohortSpec(train_per_center=args.train_per_center, test_per_center=args.test_per_center,
                      size=args.size, seed=args.seed)
    dataset = str(spec.dataset_id)
    started = time.time()
    total = 6

    _step(1, total, f"synthetic cohort: 4 centers x ({spec.train_per_center} train + {spec.test_per_center} test), "
                    f"channels DWI, ADC, B0 (center D without B0)")
    raw = write_cohort(spec, paths["nnUNet_raw"])

    _step(2, total, "nnUNetv2_plan_and_preprocess")
    _run(["nnUNetv2_plan_and_preprocess", "-d", dataset, "-c", "3d_fullres", "--verify_dataset_integrity",
          "-np", "2"], env, os.path.join(logs, "plan_and_preprocess.log"))

    _step(3, total, "CPU plans (nnUNetPlans_CPU)")
    _run(["nnunet_ext_plan_cpu", "-d", dataset], env, os.path.join(logs, "plan_cpu.log"))

    _step(4, total, f"nnUNetv2_train {dataset} 3d_fullres 0 -tr {args.trainer} ({args.iterations} iterations/epoch)")
    _run(["nnUNetv2_train", dataset, "3d_fullres", "0", "-p", "nnUNetPlans_CPU", "-tr", args.trainer,
          "-device", args.device], env, os.path.join(logs, "train.log"))

    results = {}
    for number, (label, missing) in enumerate((("all channels", []), ("ADC absent", ["ADC"])), start=5):
        _step(number, total, f"predict the test cases, {label}")
        output = os.path.join(workdir, "predictions_" + ("all" if not missing else "no_" + "_".join(missing)))
        command = ["nnunet_ext_predict", "-i", os.path.join(raw, "imagesTs"), "-o", output, "-d", dataset,
                   "-c", "3d_fullres", "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", args.trainer,
                   "-device", args.device, "--disable_tta",
                   "-npp", "0", "-nps", "0"]  # sequential: worker processes cost seconds of start-up each
        if missing:
            command += ["--missing", *missing]
        _run(command, env, os.path.join(logs, f"predict_{number}.log"))
        with open(os.path.join(raw, "case_centers.json")) as f:
            centers = json.load(f)
        scores = dice_per_case(output, os.path.join(raw, "labelsTs"))
        results[label] = {"per_case": scores, "summary": summarize_by_center(scores, centers)}

    print("\nTest-set Dice (mean ± std over cases):")
    names = list(next(iter(results.values()))["summary"])
    print(f"{'':>14}" + "".join(f"{n:>14}" for n in names))
    for label, result in results.items():
        print(f"{label:>14}" + "".join(f"{result['summary'][n]['mean']:>8.3f} ± {result['summary'][n]['std']:.2f}"
                                       for n in names))
    report = {"results": results, "trainer": args.trainer, "iterations_per_epoch": args.iterations,
              "cohort": vars(args), "elapsed_s": round(time.time() - started, 1), "provenance": provenance(args.seed)}
    with open(os.path.join(workdir, "demo_results.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nDone in {time.time() - started:.0f} s; results in {os.path.join(workdir, 'demo_results.json')}")


if __name__ == "__main__":
    main()
