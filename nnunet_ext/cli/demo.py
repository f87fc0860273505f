"""`nnunet_ext_demo`: end-to-end gradual modality dropout on the synthetic cohort, on CPU, with stock nnU-Net.

Steps: generate the cohort -> nnUNetv2_plan_and_preprocess -> derive CPU plans -> nnUNetv2_train with a
gradual-dropout trainer -> nnunet_ext_predict (nnUNetv2_predict with absent channels) on the test cases with all
channels and with ADC absent ->
Dice of both, per center. Everything lives in --workdir; results go to <workdir>/demo_results.json.
"""
import argparse
import json
import os
import shlex
import sys
import time
from typing import Callable, Dict

from nnunet_ext.data.splits import write_json_files
from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.evaluation.folders import dice_per_case, summarize_by_center
from nnunet_ext.experiments.workspace import TrainedModel, Workspace
from nnunet_ext.provenance import provenance
from nnunet_ext.training.variants import parse_trainer_name


def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


PROGRESS_KEYS = ("Epoch ", "Pseudo dice", "f(t)", "Mean Validation Dice", "predicting", "Error", "error")


def _show_progress(line: str) -> None:
    """nnU-Net's progress lines to the console (everything goes to the step's log)."""
    if any(key in line for key in PROGRESS_KEYS):
        print("    " + line.rstrip(), flush=True)


def _run(text: str, action: Callable[[], object]) -> None:
    """One step of the demo, timed; a failing command stops the demo naming its log."""
    print("  $ " + text, flush=True)
    started = time.time()
    try:
        action()
    except RuntimeError as error:
        raise SystemExit(f"error: {error}")
    print(f"  done in {time.time() - started:.0f} s", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="nnunet_ext_demo_work")
    parser.add_argument("--trainer", default="nnUNetTrainerGradualDrop_p05_8epochs_40it_4valit",
                        help="any trainer name of ours (it spells the epochs and iterations per epoch)")
    parser.add_argument("--train-per-center", type=int, default=6)
    parser.add_argument("--test-per-center", type=int, default=3)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    workdir = os.path.abspath(args.workdir)
    if os.path.exists(workdir) and os.listdir(workdir):
        sys.exit(f"error: {workdir} exists and is not empty; remove it or pass another --workdir")
    parse_trainer_name(args.trainer)  # a misspelt name stops here, before any work
    workspace = Workspace(workdir, {"nnUNet_def_n_proc": "2", "NNUNET_EXT_SEED": str(args.seed)},
                          on_output=_show_progress)
    workspace.env.setdefault("nnUNet_n_proc_DA", "1")
    spec = CohortSpec(train_per_center=args.train_per_center, test_per_center=args.test_per_center,
                      size=args.size, seed=args.seed)
    started = time.time()
    total = 6

    _step(1, total, f"synthetic cohort: 4 centers x ({spec.train_per_center} train + {spec.test_per_center} test), "
                    f"channels DWI, ADC, B0 (center D without B0)")
    raw = write_cohort(spec, workspace.paths["nnUNet_raw"])

    _step(2, total, "nnUNetv2_plan_and_preprocess")
    _run(f"nnUNetv2_plan_and_preprocess -d {spec.dataset_id} -c 3d_fullres --verify_dataset_integrity",
         lambda: workspace.plan_and_preprocess(spec.dataset_id, verify=True))

    _step(3, total, "CPU plans (nnUNetPlans_CPU)")
    cpu_plans = ["nnunet_ext_plan_cpu", "-d", str(spec.dataset_id)]
    _run(shlex.join(cpu_plans), lambda: workspace.run(cpu_plans, "plan_cpu"))

    model = TrainedModel(spec.dataset_id, os.path.basename(raw), args.trainer, "nnUNetPlans_CPU", fold=0)
    _step(4, total, f"nnUNetv2_train {spec.dataset_id} 3d_fullres 0 -tr {args.trainer}")
    _run(shlex.join(workspace.train_command(model, args.device)),
         lambda: workspace.train(model, "train", args.device))

    results = _predict_and_score(workspace, model, raw, args.device, first_step=5, total=total)
    _print_dice(results)
    report = {"results": results, "trainer": args.trainer,
              "cohort": vars(args), "elapsed_s": round(time.time() - started, 1), "provenance": provenance(args.seed)}
    path = os.path.join(workdir, "demo_results.json")
    write_json_files({path: report})  # complete or absent, read back
    print(f"\nDone in {time.time() - started:.0f} s; results in {path}")


def _predict_and_score(workspace: Workspace, model: TrainedModel, raw: str, device: str, first_step: int,
                       total: int) -> Dict[str, Dict]:
    """The test cases predicted with every channel and with ADC absent, and their Dice per case and per center."""
    with open(os.path.join(raw, "case_centers.json")) as f:
        centers = json.load(f)
    results = {}
    for number, (label, missing) in enumerate((("all channels", []), ("ADC absent", ["ADC"])), start=first_step):
        _step(number, total, f"predict the test cases, {label}")
        output = os.path.join(workspace.root, "predictions_" + ("all" if not missing else "no_" + "_".join(missing)))
        command = workspace.predict_command(model, os.path.join(raw, "imagesTs"), output, device,
                                            options=["--missing", *missing] if missing else [])
        _run(shlex.join(command), lambda: workspace.predict(command, f"predict_{number}"))
        scores = dice_per_case(output, os.path.join(raw, "labelsTs"))
        results[label] = {"per_case": scores, "summary": summarize_by_center(scores, centers)}
    return results


def _print_dice(results: Dict[str, Dict]) -> None:
    """Mean ± std of the test cases' Dice per center, one line per prediction setting."""
    print("\nTest-set Dice (mean ± std over cases):")
    names = list(next(iter(results.values()))["summary"])
    print(f"{'':>14}" + "".join(f"{n:>14}" for n in names))
    for label, result in results.items():
        print(f"{label:>14}" + "".join(f"{result['summary'][n]['mean']:>8.3f} ± {result['summary'][n]['std']:.2f}"
                                       for n in names))


if __name__ == "__main__":
    main()
