"""`nnunet_ext_reproduce`: the paper's Table 2 or 3 on the synthetic cohort (or a converted real dataset).

    nnunet_ext_reproduce --table 2 --profile quick --workdir repro
    nnunet_ext_reproduce --table 3 --profile quick --workdir repro --out benchmarks/results/table3_quick

Runs the grid {no dropout, MultiUnet, Gradual, ModDrop+} x drop probability {0.2, 0.5, 0.8} (Table 3 adds
the lower and upper bounds) through the stock nnUNetv2_plan_and_preprocess / nnUNetv2_train /
nnUNetv2_predict, each cell `runs` times (folds 0..runs-1, seeds profile.seed + fold), evaluates each model
with all channels and with the droppable one absent, and writes the table. Resumable: rerun the same command
to continue; --report-only writes the table from the runs finished so far.

Every (cell, run) is a submitit job: `--executor local` (default) runs them on this machine, `--max-parallel N`
at once; `--executor slurm` submits them as SLURM job arrays and returns (see docs/cluster.md):

    nnunet_ext_reproduce --table 2 --profile full --workdir /scratch/repro --executor slurm \
        --partition gpu --gpus-per-job 1 --max-parallel 12 --time-min 1440
"""
import argparse
import os
import sys

from nnunet_ext.experiments.stroke.harness import Harness, results_by_cell
from nnunet_ext.experiments.failed_jobs import unfinished_lines
from nnunet_ext.experiments.jobs import (StagesOutcome, add_executor_arguments, executor_settings_from_args,
                                         report_command, report_outcome, run_stages)
from nnunet_ext.experiments.stroke.report import summarize_cell, write_report
from nnunet_ext.experiments.stroke.settings import METHODS, PROFILES, TABLES
from nnunet_ext.provenance import provenance


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=int, choices=sorted(TABLES), required=True)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--source", help="raw dataset folder to derive from (default: the synthetic cohort); "
                                         "needs imagesTs/labelsTs and case_centers.json")
    parser.add_argument("--methods", nargs="+", help=f"subset of {', '.join(METHODS)} or cell keys")
    parser.add_argument("--probabilities", nargs="+", type=float)
    parser.add_argument("--runs", type=int, help="runs per cell (default: the profile's)")
    parser.add_argument("--out", help="output prefix of the table files (default: <workdir>/table<N>_<profile>)")
    parser.add_argument("--report-only", action="store_true")
    add_executor_arguments(parser)
    args = parser.parse_args(argv)

    profile = PROFILES[args.profile]
    table = TABLES[args.table]
    command = "nnunet_ext_reproduce " + " ".join(sys.argv[1:] if argv is None else argv)
    outcome = StagesOutcome()
    try:
        harness = Harness(args.workdir, table, profile, source=args.source, methods=args.methods,
                          probabilities=args.probabilities, runs=args.runs, log=lambda m: print(m, flush=True))
        if not args.report_only:
            outcome = run_stages(harness.job_stages(), executor_settings_from_args(args, args.workdir))
            report_outcome(outcome, report_command(sys.argv[1:] if argv is None else argv, "nnunet_ext_reproduce"))
            if outcome.submitted:
                return
        results = harness.finished_results()
    except (ValueError, RuntimeError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    if not results:
        sys.exit("error: no finished run to report" + outcome.failure_lines())
    grouped = results_by_cell(results)
    summaries = {key: summarize_cell(runs) for key, runs in grouped.items()}
    labels = {c.key: c.label for c in table.cells}
    out = args.out or os.path.join(harness.workdir, f"table{table.number}_{profile.name}")
    paths = write_report(table, profile, summaries, labels, out, command, provenance(seed=profile.seed))
    print(open(paths["md"]).read())
    print("wrote " + ", ".join(paths.values()))
    for line in unfinished_lines(harness.missing_runs(), harness.workdir):
        print(line)
    if outcome.failed:
        sys.exit("error: the table holds the finished runs only" + outcome.failure_lines())


if __name__ == "__main__":
    main()
