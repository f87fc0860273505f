"""Two CPU trainings at once, as the local executor runs them with --max-parallel 2: each on every core (what
nnU-Net's one-thread-per-core does) vs each pinned to its own cores (what jobs.py and cpu_threads.py do now).

    python benchmarks/parallel_cpu_trainings.py [--repeats 2] [--workdir W]

Builds the tests' tiny stroke cohort (3 centers x 3 training cases, 32 mm, seed 0), runs the stock
nnUNetv2_plan_and_preprocess and nnunet_ext_plan_cpu, then times whole `nnUNetv2_train` commands of
nnUNetTrainerGradualDrop_p05_8epochs_3it_1valit (8 epochs of 3 iterations, final validation skipped) in three
arms, in turn at every repeat so that drift on a shared machine hits all of them:
- alone: one training with every CPU of this process;
- two at once, shared cores: two trainings started together, each free to use every CPU (our trainers then start
  one thread per CPU, as nnUNetv2_train does);
- two at once, own cores: the same, each pinned (sched_setaffinity) to half of the CPUs, as the local executor
  does; our trainers size their thread pool by it.
Reports the medians and the ratios to running the two one after the other (2 x alone).
Writes benchmarks/results/parallel_cpu_trainings.{json,md}.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
DATASET = "501"
TRAINER = "nnUNetTrainerGradualDrop_p05_8epochs_3it_1valit"
ARMS = ("alone", "two at once, shared cores", "two at once, own cores")


def _prepare(workspace, seed: int) -> None:
    from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
    plans = os.path.join(workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke", "nnUNetPlans_CPU.json")
    if os.path.isfile(plans):
        return
    write_cohort(CohortSpec(train_per_center=3, test_per_center=1, size=32, seed=seed), workspace.paths["nnUNet_raw"],
                 progress=False)
    workspace.plan_and_preprocess(int(DATASET))
    workspace.run(["nnunet_ext_plan_cpu", "-d", DATASET], f"plan_cpu_{DATASET}")


def _start(env: dict, results: str, cpus: Optional[Sequence[int]]) -> subprocess.Popen:
    """One training, started and not waited for (the Workspace's train waits): the arms time trainings at once."""
    from nnunet_ext.experiments.workspace import TrainedModel, Workspace
    model = TrainedModel(int(DATASET), "Dataset501_SyntheticStroke", TRAINER, "nnUNetPlans_CPU", fold=0)
    return subprocess.Popen(Workspace.train_command(model), env={**env, "nnUNet_results": results},
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def _timed(env: dict, workdir: str, tag: str, blocks: List[Optional[Sequence[int]]]) -> float:
    """Seconds until every training of `blocks` (one per CPU block, None: unpinned) has finished."""
    start = time.perf_counter()
    processes = [_start(env, os.path.join(workdir, f"results_{tag}_{i}"), cpus) for i, cpus in enumerate(blocks)]
    for process in processes:
        _, stderr = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"training failed ({process.returncode}):\n{stderr[-2000:]}")
    return time.perf_counter() - start


def _markdown(report: dict) -> List[str]:
    medians, seconds = report["median_seconds"], report["seconds"]
    lines = [
        "# Two CPU trainings at once: shared cores vs each on its own cores",
        "",
        f"Command: `{report['provenance']['command']}` (seed {report['provenance']['seed']}); CPUs {report['cpus']}, "
        f"load average at the end {', '.join(f'{x:.1f}' for x in report['load_average_at_end'])}. Whole "
        f"`nnUNetv2_train` commands of {TRAINER} (8 epochs of 3 iterations, start-up included, final validation "
        "skipped) on the tests' tiny stroke cohort.",
        "",
        "| arm | seconds (median) | all repeats | ÷ two one after the other |",
        "|---|---|---|---|",
    ]
    for arm in ARMS:
        ratio = report["ratio_to_one_after_the_other"].get(arm)
        lines.append(f"| {arm} | {medians[arm]:.1f} | {', '.join(f'{s:.1f}' for s in seconds[arm])} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    return lines + ["", f"Shared cores ÷ own cores: **{report['shared_over_own_cores']:.2f}**.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="reused between runs (keeps the preprocessed cohort)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "parallel_cpu_trainings"))
    args = parser.parse_args()

    from nnunet_ext.experiments.records import write_table_files
    from nnunet_ext.experiments.workspace import Workspace
    from nnunet_ext.provenance import provenance
    workdir = args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_parallel_bench_")
    workspace = Workspace(workdir, {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1",
                                    "NNUNET_EXT_FINAL_VALIDATION": "0", "NNUNET_EXT_SEED": str(args.seed)},
                          unset=("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"))  # limits of their own hide the effect
    _prepare(workspace, args.seed)
    env = workspace.env

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit(f"needs at least 2 CPUs, this process may use {cpus}")
    half = len(cpus) // 2
    blocks = {"alone": [None], "two at once, shared cores": [None, None],
              "two at once, own cores": [cpus[:half], cpus[half:2 * half]]}
    seconds = {arm: [] for arm in ARMS}
    for repeat in range(args.repeats):
        for arm in (ARMS if repeat % 2 == 0 else tuple(reversed(ARMS))):
            seconds[arm].append(_timed(env, workdir, f"{repeat}_{ARMS.index(arm)}", blocks[arm]))

    medians = {arm: statistics.median(values) for arm, values in seconds.items()}
    sequential = 2 * medians["alone"]
    report = {
        "benchmark": "parallel_cpu_trainings", "trainer": TRAINER, "epochs": 8, "iterations_per_epoch": 3,
        "cpus": cpus, "machine": platform.processor() or platform.machine(),
        "load_average_at_end": list(os.getloadavg()), "repeats": args.repeats,
        "seconds": {arm: [round(s, 2) for s in values] for arm, values in seconds.items()},
        "median_seconds": {arm: round(m, 2) for arm, m in medians.items()},
        "ratio_to_one_after_the_other": {arm: round(medians[arm] / sequential, 3) for arm in ARMS[1:]},
        "shared_over_own_cores": round(medians["two at once, shared cores"] / medians["two at once, own cores"], 3),
        "provenance": provenance(seed=args.seed, command=" ".join([os.path.basename(sys.executable)] + sys.argv)),
    }
    lines = _markdown(report)
    write_table_files(args.out, lines, None, report)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
