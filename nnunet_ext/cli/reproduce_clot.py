"""`nnunet_ext_reproduce_clot`: the paper's thrombus Tables 5, 6 and 7 on the synthetic clot cohort.

    nnunet_ext_reproduce_clot --table 5 6 7 --profile quick_hard --workdir repro_clot_hard \
        --out benchmarks/results/clot_quick_hard
    nnunet_ext_reproduce_clot --table 6 --profile ci --workdir W --models nnU-Net UpAttLLSTM

Trains on centers A + B (the paper's CHSF + MATAR) with the stock nnUNetv2_plan_and_preprocess /
nnUNetv2_train, predicts with nnunet_ext_predict (PHASE zero-filled for the 'missing' rows), post-processes
(Lesion, Thr, Big) and evaluates lesion-wise by proximal / distal occlusion; center C (SWI, no PHASE) is
test-only. Every row is the profile's number of runs (run k: fold k-1, seed + k-1), reported as mean ± std
across runs; post-processed rows start with the min-size step (n_min scaled to the cohort's pixel). A training
shared by several rows or tables runs once per run. Resumable per (row, run): rerun the same command to continue;
--report-only writes the tables from the runs finished so far and names the missing ones; --runs K computes
runs 1..K only (e.g. one run of every row first). Files:
<out>.md/.csv/.json (with several tables, <out>_table<N>.*; default out <workdir>/clot_table<N>_<profile>).
--easy-results PREFIX shows another run of the tables beside each row (e.g. the committed one-run `easy` results,
benchmarks/results/clot_quick: its <PREFIX>_table<N>.json).
Every training is a submitit job (`--executor local`, default; `--max-parallel N` at once on this machine;
`--executor slurm`: SLURM job arrays, submitted and left to run, then --report-only).
"""
import argparse
import os
import shlex
import sys
from dataclasses import replace
from typing import List, Optional

from nnunet_ext.experiments.clot.harness import ClotHarness
from nnunet_ext.experiments.clot.profiles import CLOT_PROFILES, TABLE_MODELS
from nnunet_ext.experiments.clot.aggregate import missing_runs, read_reference_results
from nnunet_ext.experiments.clot.report import write_clot_report
from nnunet_ext.experiments.failed_jobs import unfinished_lines
from nnunet_ext.experiments.jobs import (StagesOutcome, add_executor_arguments, executor_settings_from_args,
                                         report_command, report_outcome, run_stages)
from nnunet_ext.provenance import provenance

def models_per_table(tables: List[int], models: Optional[List[str]]) -> dict:
    """{table: models of it to run}; a model that no chosen table has is an error naming the choices."""
    if not models:
        return {t: None for t in tables}
    known = {m for t in tables for m in TABLE_MODELS[t]}
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))} for Table(s) "
                         f"{', '.join(map(str, tables))}; expected some of {', '.join(sorted(known))}")
    return {t: [m for m in models if m in TABLE_MODELS[t]] for t in tables}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=int, nargs="+", choices=sorted(TABLE_MODELS), required=True)
    parser.add_argument("--profile", choices=sorted(CLOT_PROFILES), default="quick")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--models", nargs="+", help="subset of the tables' models (Table 5: AttLLSTM; Table 6: "
                                                    "nnU-Net, CLSTM, LLSTM, AttCLSTM, AttLLSTM, UpAttLLSTM; Table 7: "
                                                    "UpAttLLSTM, UpAttLLSTMGradualDrop)")
    parser.add_argument("--lesion", choices=("model", "reference"),
                        help="lesion mask of the Lesion step: a trained lesion model, or the reference lesion "
                             "(oracle) (default: the profile's)")
    parser.add_argument("--out", help="output prefix of the table files")
    parser.add_argument("--report-only", action="store_true",
                        help="write the tables from the finished runs only, naming the missing ones")
    parser.add_argument("--runs", type=int, default=None, metavar="K",
                        help="compute runs 1..K only (default: all of the profile's); later runs are reported where "
                             "finished and named as missing otherwise")
    parser.add_argument("--validation-cases", type=int, default=None, metavar="K",
                        help="training cases validated on (nnU-Net's pseudo Dice, checkpoint_best.pth), the rest "
                             "trained on (default: the profile's, 1); part of the profile a workdir is made with")
    parser.add_argument("--easy-results", default=None, metavar="PREFIX",
                        help="another run of the tables to show beside the rows: <PREFIX>_table<N>.json (e.g. "
                             "benchmarks/results/clot_quick, one run per row on the `easy` preset)")
    add_executor_arguments(parser)
    return parser


def missing_row_runs(reports: dict) -> List[str]:
    """'<row>: run(s) <k>, ...' for every row of the reported tables with a run without a result (a row shared
    by two tables once)."""
    missing = {}
    for rows, results, _ in reports.values():
        for row in rows:
            runs = missing_runs(results[row.key])
            if runs:
                missing[row.key] = f"{row.key}: run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))}"
    return list(missing.values())


def _write_tables(harness: ClotHarness, reports: dict, args: argparse.Namespace, command: str) -> List[str]:
    """The table files of every table with a finished run; returns their paths."""
    profile, written = harness.profile, []
    for table, (rows, results, notes) in reports.items():
        if not any(r is not None for runs in results.values() for r in runs):
            print(f"Table {table}: no finished run of any row yet, not written")
            continue
        if args.out:
            out = args.out if len(reports) == 1 else f"{args.out}_table{table}"
        else:
            out = os.path.join(harness.workdir, f"clot_table{table}_{profile.name}")
        reference, label = {}, ""
        if args.easy_results:
            label = f"{args.easy_results}_table{table}.json"
            if not os.path.isfile(label):
                raise ValueError(f"--easy-results: {label} not found")
            reference = read_reference_results(label)
        paths = write_clot_report(table, profile, rows, results, out, command,
                                  provenance(seed=profile.seed, command=command), notes, reference, label)
        print(open(paths["md"]).read())
        written += paths.values()
    return written


def main(argv: Optional[List[str]] = None) -> None:
    args = _parser().parse_args(argv)
    tables = list(dict.fromkeys(args.table))
    command = shlex.join(["nnunet_ext_reproduce_clot", *(sys.argv[1:] if argv is None else argv)])
    outcome = StagesOutcome()
    try:
        profile = CLOT_PROFILES[args.profile]
        if args.validation_cases is not None:
            profile = replace(profile, validation_cases=args.validation_cases)
        chosen = models_per_table(tables, args.models)
        harness = ClotHarness(args.workdir, profile, log=lambda m: print(m, flush=True), command=command)
        for table in tables:
            if chosen[table] == []:
                print(f"Table {table}: none of the chosen models, skipped")
        selection = {table: chosen[table] for table in tables if chosen[table] != []}
        if not args.report_only:
            outcome = run_stages(harness.job_stages(selection, args.lesion, args.runs),
                                 executor_settings_from_args(args, args.workdir))
            report_outcome(outcome, report_command(sys.argv[1:] if argv is None else argv,
                                                   "nnunet_ext_reproduce_clot"))
            if outcome.submitted:
                return
        reports = harness.read_tables(selection, args.lesion, up_to_run=args.runs)
        written = _write_tables(harness, reports, args, command)
        if not written:
            raise ValueError(f"no finished run of any row of Table(s) {', '.join(map(str, tables))} to report")
    except (ValueError, RuntimeError, FileExistsError) as error:
        sys.exit(f"error: {error}" + outcome.failure_lines())
    print("wrote " + ", ".join(written))
    for line in unfinished_lines(missing_row_runs(reports), harness.workdir):
        print(line)
    if outcome.failed:
        sys.exit("error: the tables hold the finished runs only" + outcome.failure_lines())


if __name__ == "__main__":
    main()
