"""Step time of our trainers divided by nnUNetTrainer's, on the same batches, in one run; and the parameters
each adds to the network.

    python benchmarks/step_time.py [--steps 100] [--trainers nnUNetTrainerGradualDrop_p05 nnUNetTrainerModDropPlus_p05]

Builds the synthetic cohort, runs the stock nnUNetv2_plan_and_preprocess and our CPU plans, then times
`train_step` of every trainer in one process, rotating which goes first at every step so that drift
(thermal, caches, other load) hits all alike. All networks start from the same weights and see the same
batches. A second plain nnUNetTrainer is timed as a control: its ratio is the measurement's noise floor.
Parameter shares are given for the CPU plans and for nnU-Net's own 3d_fullres plans of the same dataset.
Writes benchmarks/results/step_time.{json,md}.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
BASELINE, CONTROL = "nnUNetTrainer", "nnUNetTrainer (control copy)"


def _prepare(workspace) -> None:
    from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
    if os.path.isfile(os.path.join(workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke",
                                   "nnUNetPlans_CPU.json")):
        return
    write_cohort(CohortSpec(), workspace.paths["nnUNet_raw"], progress=False)
    workspace.plan_and_preprocess(501)
    workspace.run(["nnunet_ext_plan_cpu", "-d", "501"], "plan_cpu_501")


def _paired(times: dict, name: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[BASELINE]))


def _parameter_share(trainer_class, plans: dict, dataset_json: dict) -> dict:
    """Parameters the trainer's network has beyond nnUNetTrainer's, for one plans file."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    manager = PlansManager(plans)
    configuration = manager.get_configuration("3d_fullres")
    counts = {}
    for name, cls in (("base", nnUNetTrainer), ("ours", trainer_class)):
        network = cls.build_network_architecture(manager, configuration, len(dataset_json["channel_names"]),
                                                 len(dataset_json["labels"]), True)
        counts[name] = sum(p.numel() for p in network.parameters())
    extra = counts["ours"] - counts["base"]
    return {"network_parameters": counts["base"], "extra_parameters": extra,
            "extra_share_percent": round(100 * extra / counts["base"], 5)}


def _initialised_trainers(classes: Dict[str, type], plans: dict, dataset_json: dict) -> Dict[str, object]:
    """Every trainer from the same seed (same initial weights), at epoch 300 (f = 0.5 for gradual dropout)."""
    trainers = {}
    for name, cls in classes.items():
        torch.manual_seed(0)
        trainer = cls(plans={**plans, "continue_training": False}, configuration="3d_fullres",
                      fold=0, dataset_json=dataset_json, device=torch.device("cpu"))
        trainer.initialize()
        trainer.current_epoch = 300  # second quarter of 1000 epochs: f = 0.5 for gradual dropout
        trainer.on_train_epoch_start()
        trainers[name] = trainer
    return trainers


def _step_times(trainers: Dict[str, object], batches: List[dict], warmup: int) -> Dict[str, List[float]]:
    """Seconds of each trainer's train_step on every batch after the warm-up, who goes first rotating per step."""
    times: Dict[str, List[float]] = {name: [] for name in trainers}
    order = list(trainers)
    for step, batch in enumerate(batches):
        for name in order[step % len(order):] + order[:step % len(order)]:
            copy = {"data": batch["data"].clone(), "target": [t.clone() for t in batch["target"]]}
            started = time.perf_counter()
            trainers[name].train_step(copy)
            if step >= warmup:
                times[name].append(time.perf_counter() - started)
    return times


def _markdown(result: dict) -> List[str]:
    lines = ["# Step time and parameters vs nnUNetTrainer", "", f"Command: `{result['provenance']['command']}`", "",
             f"CPU ({result['machine']['cpu_count']} cores), batch {result['batch_shape']} (CPU plans), "
             f"{result['steps']} steps after {result['warmup']} warm-up, same batches and initial weights, order "
             f"rotated per step. nnUNetTrainer median step: {result['baseline_median_step_s']} s.", "",
             "| trainer | step ratio (medians) | median of paired ratios | extra params, CPU plans | "
             "extra params, nnUNetPlans 3d_fullres |", "|---|---|---|---|---|"]
    for name, row in result["trainers"].items():
        shares = [f"{row['parameters'][p]['extra_parameters']} ({row['parameters'][p]['extra_share_percent']} %)"
                  if "parameters" in row else "-" for p in ("nnUNetPlans_CPU", "nnUNetPlans")]
        lines.append(f"| {name} | {row['ratio_of_medians']} | {row['median_paired_ratio']} | {shares[0]} | "
                     f"{shares[1]} |")
    return lines + ["", f"Targets: {result['targets']}. The control row is a second plain nnUNetTrainer: its "
                        "distance from 1 is the noise of this measurement.", "",
                    f"Versions: {result['provenance']['versions']}", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--trainers", nargs="+",
                        default=["nnUNetTrainerGradualDrop_p05", "nnUNetTrainerModDropPlus_p05"])
    parser.add_argument("--workdir", default=None, help="reused between runs (keeps the preprocessed cohort)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "step_time"))
    args = parser.parse_args()

    from nnunet_ext.experiments.records import write_table_files
    from nnunet_ext.experiments.workspace import Workspace
    workspace = Workspace(args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_bench_"))
    _prepare(workspace)
    os.environ.update({**workspace.paths, "nnUNet_compile": "false", "nnUNet_n_proc_DA": "0"})

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_ext.provenance import provenance
    from nnunet_ext.training.variants import trainer_variant

    folder = os.path.join(workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke")
    plans = {name: json.load(open(os.path.join(folder, f"{name}.json"))) for name in ("nnUNetPlans_CPU", "nnUNetPlans")}
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
    classes = {BASELINE: nnUNetTrainer, **{n: trainer_variant(n) for n in args.trainers}, CONTROL: nnUNetTrainer}
    trainers = _initialised_trainers(classes, plans["nnUNetPlans_CPU"], dataset_json)
    loader, _ = trainers[BASELINE].get_dataloaders()
    batches = [next(loader) for _ in range(args.steps + args.warmup)]
    times = _step_times(trainers, batches, args.warmup)

    median = {name: statistics.median(values) for name, values in times.items()}
    rows = {}
    for name in list(args.trainers) + [CONTROL]:
        rows[name] = {"ratio_of_medians": round(median[name] / median[BASELINE], 4),
                      "median_paired_ratio": round(_paired(times, name), 4),
                      "median_step_s": round(median[name], 5)}
        if name != CONTROL:
            rows[name]["parameters"] = {p: _parameter_share(classes[name], plans[p], dataset_json) for p in plans}
    result = {
        "baseline_median_step_s": round(median[BASELINE], 5), "trainers": rows,
        "targets": {"nnUNetTrainerGradualDrop_p05": "step ratio <= 1.02",
                    "nnUNetTrainerModDropPlus_p05": "step ratio <= 1.10, extra parameters < 0.5 %"},
        "steps": args.steps, "warmup": args.warmup, "batch_shape": list(batches[0]["data"].shape),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "device": "cpu"},
        "provenance": provenance(seed=0, command="python " + " ".join(sys.argv)),
    }
    lines = _markdown(result)
    write_table_files(args.out, lines, None, result)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
