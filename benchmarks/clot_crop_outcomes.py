"""What a trained clot model gets right and wrong on its training and validation crops (never the test cases).

    python benchmarks/clot_crop_outcomes.py --workdir /tmp/pilot_clot --plans nnUNetPlans_UpAttLLSTM_s8 \
        [--trainer nnUNetTrainerUpAttLLSTM_400epochs] [--fold 0] [--checkpoints checkpoint_best.pth checkpoint_final.pth]

Builds the trainer of a finished training (its plans, dataset and fold in the harness workdir), draws crops with
its own loaders (the clot sampling of training and validation, seeded) and counts, per checkpoint, the true
positive, false positive and false negative voxels on crops holding a clot and on clot-free crops, and the
pooled Dice. A training that fits its training crops and loses its validation crops is over-fitting; whether it
loses them by false positives or by missing the clot says where. The checkpoints are read from a copy, so the
training folder gets no log of ours. Prints one line per (checkpoint, split) and writes them to --out (JSON).
"""
import argparse
import os
import shutil
import sys
import tempfile
from typing import Dict, List

import numpy as np
import torch

SPLITS = (("validation", 60), ("training", 30))  # batches drawn from each loader


def crop_outcomes(network: torch.nn.Module, loader, batches: int, seed: int) -> Dict[str, List[int]]:
    """{"clot": [crops, tp, fp, fn], "clot_free": [...]} over `batches` batches of `loader`."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    counts = {"clot": [0, 0, 0, 0], "clot_free": [0, 0, 0, 0]}
    for _ in range(batches):
        batch = next(loader)
        with torch.no_grad():
            predicted = network(batch["data"]).argmax(1)
        target = batch["target"]
        target = target[:, 0] if target.ndim == predicted.ndim + 1 else target
        for p, t in zip(predicted, target):
            kind = "clot" if bool((t > 0).any()) else "clot_free"
            row = counts[kind]
            row[0] += 1
            row[1] += int(((p == 1) & (t == 1)).sum())
            row[2] += int(((p == 1) & (t != 1)).sum())
            row[3] += int(((p != 1) & (t == 1)).sum())
    return counts


def pooled_dice(counts: Dict[str, List[int]]) -> float:
    tp = counts["clot"][1]
    wrong = counts["clot"][2] + counts["clot"][3] + counts["clot_free"][2]
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the harness workdir (nnUNet_raw, _preprocessed, _results)")
    parser.add_argument("--plans", required=True)
    parser.add_argument("--trainer", default="nnUNetTrainerUpAttLLSTM_400epochs_16it_2valit",
                        help="quick_hard_400's clot trainer (workdirs trained before the iterations were in the names: "
                             "nnUNetTrainerUpAttLLSTM_400epochs)")
    parser.add_argument("--dataset", default="Dataset531_ClotTrainAB")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--checkpoints", nargs="+", default=["checkpoint_best.pth", "checkpoint_final.pth"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    fold_folder = os.path.join(args.workdir, "nnUNet_results", args.dataset,
                               f"{args.trainer}__{args.plans}__3d_fullres", f"fold_{args.fold}")
    scratch = tempfile.mkdtemp(prefix="clot_crop_outcomes_")
    copy = os.path.join(scratch, args.dataset, f"{args.trainer}__{args.plans}__3d_fullres", f"fold_{args.fold}")
    os.makedirs(copy)
    for name in args.checkpoints:
        shutil.copy(os.path.join(fold_folder, name), copy)
    os.environ.update(nnUNet_raw=os.path.join(args.workdir, "nnUNet_raw"),
                      nnUNet_preprocessed=os.path.join(args.workdir, "nnUNet_preprocessed"),
                      nnUNet_results=scratch, nnUNet_n_proc_DA="0", nnUNet_compile="false")
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunet_ext.data.splits import write_json_files
    from nnunet_ext.paths import trainer_dir
    from nnunet_ext.provenance import provenance
    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], args.dataset)
    plans = load_json(os.path.join(preprocessed, f"{args.plans}.json"))
    plans["continue_training"] = False  # nnUNetTrainer reads this key since nnunetv2 2.8
    trainer_class = recursive_find_python_class(trainer_dir(), args.trainer, "nnunet_ext_trainers")
    torch.set_num_threads(1)
    trainer = trainer_class(plans, "3d_fullres", args.fold, load_json(os.path.join(preprocessed, "dataset.json")),
                            torch.device("cpu"))
    trainer.initialize()
    loaders = dict(zip(("training", "validation"), trainer.get_dataloaders()))
    report = {"fold_folder": fold_folder, "trainer": args.trainer, "plans": args.plans, "results": {},
              "provenance": provenance(seed=args.seed, command=" ".join([os.path.basename(sys.executable)] + sys.argv))}
    for name in args.checkpoints:
        checkpoint = torch.load(os.path.join(copy, name), map_location="cpu", weights_only=False)
        trainer.network.load_state_dict(checkpoint["network_weights"])
        trainer.network.eval()
        for split, batches in SPLITS:
            counts = crop_outcomes(trainer.network, loaders[split], batches, args.seed)
            clot, free = counts["clot"], counts["clot_free"]
            line = (f"{name} (epoch {checkpoint['current_epoch']}) {split}: clot crops {clot[0]}: TP {clot[1]} "
                    f"FP {clot[2]} FN {clot[3]}; clot-free crops {free[0]}: FP {free[2]}; pooled Dice "
                    f"{pooled_dice(counts):.3f}")
            print(line, flush=True)
            report["results"][f"{name} {split}"] = {"epoch": checkpoint["current_epoch"], "counts": counts,
                                                   "pooled_dice": round(pooled_dice(counts), 4), "line": line}
    shutil.rmtree(scratch)
    if args.out:
        write_json_files({args.out: report})


if __name__ == "__main__":
    main()
