"""Step time of nnUNetTrainerGradualDrop_p05 divided by nnUNetTrainer's, on the same batches, in one run.

    python benchmarks/step_time_gradual_dropout.py [--steps 100] [--workdir DIR]

Builds the synthetic cohort, runs the stock nnUNetv2_plan_and_preprocess and our CPU plans, then times
`train_step` of both trainers in one process, alternating which goes first at every step so that drift
(thermal, caches, other load) hits both alike. Both networks start from the same weights and see the same
batches. Writes benchmarks/results/step_time_gradual_dropout.{json,md}.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def _prepare(workdir: str, env: dict) -> None:
    from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
    if os.path.isfile(os.path.join(env["nnUNet_preprocessed"], "Dataset501_SyntheticStroke", "nnUNetPlans_CPU.json")):
        return
    write_cohort(CohortSpec(), env["nnUNet_raw"], progress=False)
    subprocess.run(["nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "3d_fullres", "-np", "2"], env=env,
                   check=True, capture_output=True)
    subprocess.run(["nnunet_ext_plan_cpu", "-d", "501"], env=env, check=True, capture_output=True)


def _paired(times: dict, name: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times["nnUNetTrainer"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "step_time_gradual_dropout"))
    args = parser.parse_args()

    from nnunet_ext.paths import nnunet_environment
    workdir = args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_bench_")
    paths = {n: os.path.join(workdir, n) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    env = nnunet_environment(**paths, nnUNet_compile="false", nnUNet_n_proc_DA="2")
    _prepare(workdir, env)
    os.environ.update({**paths, "nnUNet_compile": "false", "nnUNet_n_proc_DA": "0"})

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunet_ext.dropout.modality_dropout import apply_modality_dropout, draw_modality_dropout
    from nnunet_ext.provenance import provenance
    from nnunet_ext.training.variants import trainer_variant

    folder = os.path.join(paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke")
    plans = json.load(open(os.path.join(folder, "nnUNetPlans_CPU.json")))
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))
    trainers = {}
    # a second plain nnUNetTrainer is the control: its ratio to the first shows the measurement's noise floor
    for name, cls in (("nnUNetTrainer", nnUNetTrainer),
                      ("nnUNetTrainerGradualDrop_p05", trainer_variant("nnUNetTrainerGradualDrop_p05")),
                      ("nnUNetTrainer (control copy)", nnUNetTrainer)):
        torch.manual_seed(0)
        trainer = cls(plans={**plans, "continue_training": False}, configuration="3d_fullres", fold=0,
                      dataset_json=dataset_json, device=torch.device("cpu"))
        trainer.initialize()
        trainer.current_epoch = 300  # second quarter of 1000 epochs: f = 0.5, channels really scaled
        trainer.on_train_epoch_start()
        trainers[name] = trainer
    loader, _ = trainers["nnUNetTrainer"].get_dataloaders()
    batches = [next(loader) for _ in range(args.steps + args.warmup)]

    def clone(batch):
        return {"data": batch["data"].clone(), "target": [t.clone() for t in batch["target"]]}

    times = {name: [] for name in trainers}
    order = list(trainers)
    for step, batch in enumerate(batches):
        for name in order[step % len(order):] + order[:step % len(order)]:  # rotate who goes first
            copy = clone(batch)
            started = time.perf_counter()
            trainers[name].train_step(copy)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - started)

    data = batches[0]["data"]
    generator = torch.Generator().manual_seed(0)
    dropout_times = []
    for _ in range(200):
        started = time.perf_counter()
        draw = draw_modality_dropout(data.shape[0], data.shape[1], (1,), 0.5, 0.5, 0.01, generator)
        apply_modality_dropout(data, draw, inplace=True)
        dropout_times.append(time.perf_counter() - started)

    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["nnUNetTrainerGradualDrop_p05"] / median["nnUNetTrainer"]
    result = {
        "ratio_median_step_time": round(ratio, 4),
        "control_ratio_plain_vs_plain": round(median["nnUNetTrainer (control copy)"] / median["nnUNetTrainer"], 4),
        # step-by-step ratios on the same batch, then their median: robust to slow drift over the run
        "median_paired_ratio": round(_paired(times, "nnUNetTrainerGradualDrop_p05"), 4),
        "control_median_paired_ratio": round(_paired(times, "nnUNetTrainer (control copy)"), 4),
        "target": "<= 1.02",
        "median_step_s": {k: round(v, 5) for k, v in median.items()},
        "mean_step_s": {k: round(statistics.mean(v), 5) for k, v in times.items()},
        "dropout_draw_and_apply_median_ms": round(statistics.median(dropout_times) * 1000, 4),
        "steps": args.steps, "warmup": args.warmup,
        "batch_shape": list(data.shape),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "device": "cpu"},
        "provenance": provenance(seed=0, command="python " + " ".join(sys.argv)),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write("# Step time: nnUNetTrainerGradualDrop_p05 / nnUNetTrainer\n\n"
                f"Command: `{result['provenance']['command']}`\n\n"
                f"| trainer | median step (s) | mean step (s) |\n|---|---|---|\n")
        for name in trainers:
            f.write(f"| {name} | {result['median_step_s'][name]} | {result['mean_step_s'][name]} |\n")
        f.write(f"\nRatio of medians: **{result['ratio_median_step_time']}** (target {result['target']}), "
                f"{args.steps} steps after {args.warmup} warm-up, batch {result['batch_shape']}, CPU "
                f"({os.cpu_count()} cores), same batches and initial weights, order rotated per step.\n"
                f"Noise floor: a second plain nnUNetTrainer timed alongside gives "
                f"{result['control_ratio_plain_vs_plain']}.\n"
                f"Median of per-step paired ratios: {result['median_paired_ratio']} (control "
                f"{result['control_median_paired_ratio']}).\n"
                f"Dropout draw + apply alone: {result['dropout_draw_and_apply_median_ms']} ms per batch.\n"
                f"Versions: {result['provenance']['versions']}\n")
    print(json.dumps({k: result[k] for k in ("ratio_median_step_time", "control_ratio_plain_vs_plain",
                                             "median_paired_ratio", "control_median_paired_ratio",
                                             "median_step_s",
                                             "dropout_draw_and_apply_median_ms")}, indent=2))


if __name__ == "__main__":
    main()
