"""`nnunet_ext_reproduce_clot`: the paper's thrombus Tables 5, 6 and 7 on the synthetic clot cohort.

    nnunet_ext_reproduce_clot --table 5 6 7 --profile quick --workdir repro_clot --out benchmarks/results/clot_quick
    nnunet_ext_reproduce_clot --table 6 --profile ci --workdir W --models nnU-Net UpAttLLSTM

Trains on centers A + B (the paper's CHSF + MATAR) with the stock nnUNetv2_plan_and_preprocess /
nnUNetv2_train, predicts with nnunet_ext_predict (PHASE zero-filled for the 'missing' rows), post-processes
(Lesion, Thr, Big) and evaluates lesion-wise by proximal / distal occlusion; center C (SWI, no PHASE) is
test-only. A training shared by several rows or tables runs once. Resumable: rerun the same command to
continue; --report-only writes the tables from the rows finished so far. Files: <out>.md/.csv/.json
(with several tables, <out>_table<N>.*; default out <workdir>/clot_table<N>_<profile>).
"""
import argparse
import os
import shlex
import sys
from typing import List, Optional

from nnunet_ext.experiments.clot_harness import ClotHarness
from nnunet_ext.experiments.clot_tables import CLOT_PROFILES, TABLE_MODELS, write_clot_report
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


def main(argv: Optional[List[str]] = None) -> None:
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
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)

    profile = CLOT_PROFILES[args.profile]
    tables = list(dict.fromkeys(args.table))
    command = shlex.join(["nnunet_ext_reproduce_clot", *(sys.argv[1:] if argv is None else argv)])
    written = []
    try:
        chosen = models_per_table(tables, args.models)
        harness = ClotHarness(args.workdir, profile, log=lambda m: print(m, flush=True), command=command)
        for table in tables:
            if chosen[table] == []:
                print(f"Table {table}: none of the chosen models, skipped")
                continue
            rows, results, notes = harness.run_table(table, chosen[table], args.lesion, args.report_only)
            if not results:
                raise ValueError(f"Table {table}: no finished row to report")
            if args.out:
                out = args.out if len(tables) == 1 else f"{args.out}_table{table}"
            else:
                out = os.path.join(harness.workdir, f"clot_table{table}_{profile.name}")
            paths = write_clot_report(table, profile, rows, results, out, command,
                                      provenance(seed=profile.seed, command=command), notes)
            print(open(paths["md"]).read())
            written += paths.values()
    except (ValueError, RuntimeError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
