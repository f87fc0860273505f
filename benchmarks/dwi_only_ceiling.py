"""How much Dice DWI alone allows on Table 2's quick cohort: the ceiling a model could keep with ADC missing.

    python benchmarks/dwi_only_ceiling.py --workdir WORKDIR [--fold 0]

Table 2's bar asks the dropout methods to keep >= 95 % of their all-channel Dice with ADC absent. That is only
possible if DWI alone carries the lesions. This trains the stock nnU-Net (CPU plans, the quick profile's
budget: `nnUNetTrainerNoDropout_8epochs_60it_4valit`, seed = fold) on the DWI channel of the harness's
Table 2 dataset (511) with the harness's own split, predicts the same test cases as the harness does
(nnunet_ext_predict through the Workspace, without test-time mirroring; the committed results were predicted by
nnUNetv2_predict with mirroring) and compares, per center, with the harness's runs of the same fold
(`<workdir>/runs/table2/<cell>/fold_<f>.json`).
Writes benchmarks/results/dwi_only_ceiling.{json,md} (--out to change).
Needs a workdir in which the Table 2 harness has run.
"""
import argparse
import json
import os
import shutil
import sys
from typing import Dict, Mapping

from nnunet_ext.evaluation.folders import dice_per_case
from nnunet_ext.experiments.stroke.report import ROWS, summarize_cell
from nnunet_ext.experiments.records import write_table_files
from nnunet_ext.experiments.workspace import TrainedModel, Workspace
from nnunet_ext.provenance import provenance

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "Dataset511_Table2_all_centers"
DWI_ONLY_ID, DWI_ONLY = "591", "Dataset591_Table2_DWI_only"
TRAINER, PLANS = "nnUNetTrainerNoDropout_8epochs_60it_4valit", "nnUNetPlans_CPU"  # the quick profile's budget
COMPARED_CELLS = ("no_dropout", "MultiUnet_p08", "ModDrop+_p08")  # the baseline and Table 2's best two


def center_means(dice: Mapping[str, float], case_centers: Mapping[str, str]) -> Dict[str, float]:
    """Mean Dice per center and their average (the tables' 'average' column), as the harness's report computes it."""
    one_run = {"dice": {row: dict(dice) for row in ROWS}, "case_centers": dict(case_centers)}
    summary = summarize_cell([one_run])["all"]
    return {**{center: stats["mean"] for center, stats in summary["centers"].items()},
            "average": summary["average"]["mean"]}


def derive_dwi_only(source_raw: str, target_raw: str) -> None:
    """The source dataset with channel 0 (DWI) only, written to a staging folder and renamed when complete."""
    staging = target_raw + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    for sub in ("imagesTr", "imagesTs", "labelsTr", "labelsTs"):
        os.makedirs(os.path.join(staging, sub))
        for name in os.listdir(os.path.join(source_raw, sub)):
            if sub.startswith("labels") or name.endswith("_0000.nii.gz"):
                shutil.copy(os.path.join(source_raw, sub, name), os.path.join(staging, sub, name))
    dataset = json.load(open(os.path.join(source_raw, "dataset.json")))
    dataset.update(channel_names={"0": "DWI"}, name="Table2_DWI_only", droppable_channels=[])
    with open(os.path.join(staging, "dataset.json"), "w") as f:
        json.dump(dataset, f, indent=1)
    os.rename(staging, target_raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a Table 2 harness workdir (quick profile)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "dwi_only_ceiling"))
    args = parser.parse_args()

    workdir = os.path.abspath(args.workdir)
    workspace = Workspace(workdir, {"nnUNet_n_proc_DA": "1", "NNUNET_EXT_FINAL_VALIDATION": "0",
                                    "NNUNET_EXT_SEED": str(args.fold)})
    paths = workspace.paths
    source_raw, raw = (os.path.join(paths["nnUNet_raw"], name) for name in (SOURCE, DWI_ONLY))
    splits = os.path.join(paths["nnUNet_preprocessed"], SOURCE, "splits_final.json")
    if not os.path.isfile(splits):
        sys.exit(f"{splits} not found: run `nnunet_ext_reproduce --table 2 --profile quick --workdir {workdir}` first")
    if not os.path.isdir(raw):
        derive_dwi_only(source_raw, raw)
    if not os.path.isfile(os.path.join(paths["nnUNet_preprocessed"], DWI_ONLY, f"{PLANS}.json")):
        workspace.plan_and_preprocess(int(DWI_ONLY_ID))
        shutil.copy(splits, os.path.join(paths["nnUNet_preprocessed"], DWI_ONLY, "splits_final.json"))
        workspace.run(["nnunet_ext_plan_cpu", "-d", DWI_ONLY_ID], f"plan_cpu_{DWI_ONLY_ID}")
    model = TrainedModel(int(DWI_ONLY_ID), DWI_ONLY, TRAINER, PLANS, args.fold)
    workspace.train(model, f"train_dwi_only_f{args.fold}")
    predictions = workspace.predict(
        workspace.predict_command(model, os.path.join(raw, "imagesTs"), os.path.join(workdir, "dwi_only",
                                                                                      f"fold_{args.fold}_pred")),
        f"predict_dwi_only_f{args.fold}")

    case_centers = json.load(open(os.path.join(source_raw, "case_centers.json")))
    rows = {"DWI only (trained and tested without ADC)":
            center_means(dice_per_case(predictions, os.path.join(raw, "labelsTs")), case_centers)}
    for cell in COMPARED_CELLS:
        run_file = os.path.join(workdir, "runs", "table2", cell, f"fold_{args.fold}.json")
        if os.path.isfile(run_file):
            dice = json.load(open(run_file))["dice"]
            rows[f"{cell}, all channels"] = center_means(dice["all"], case_centers)
            rows[f"{cell}, ADC absent"] = center_means(dice["missing"], case_centers)

    record = {"fold": args.fold, "trainer": TRAINER, "plans": PLANS, "rows": rows,
              "provenance": provenance(seed=args.fold)}
    columns = list(next(iter(rows.values())))
    lines = [f"# DWI-only ceiling of Table 2's quick cohort (fold {args.fold})", "",
             f"Command: `{record['provenance']['command']}`", "",
             f"Stock nnU-Net ({TRAINER}, {PLANS}) trained on DWI alone with the harness's split, against the "
             "harness's runs of the same fold. Mean Dice per center of the test cases.", "",
             "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{v:.3f}" for v in values.values()) + " |" for name, values in rows.items()]
    lines += ["", f"Versions: {record['provenance']['versions']}; seed {args.fold}.", ""]
    write_table_files(args.out, lines, None, record)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
