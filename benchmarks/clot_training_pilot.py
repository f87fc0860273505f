"""Pilot of the clot trainers' recipe on the validation split (never the test cases), before any table run.

Trains the chosen models of the `quick_hard_400` profile (run 1: fold 0, the profile's seed) through the clot
harness's own training step (stock `nnUNetv2_train`), in a workdir of its own, and summarises each training log:
nnU-Net's validation pseudo Dice per epoch beside the attention diagnostics (alpha, beta, entropy). Nothing here
predicts or evaluates a test case.

    python benchmarks/clot_training_pilot.py --workdir /tmp/pilot_clot --models AttLLSTM UpAttLLSTM \
        --out benchmarks/results/pilots/clot_training
"""
import argparse
import glob
import json
import os
import re
import shutil
import sys
from typing import Dict, List

from nnunet_ext.data.splits import write_json_files
from nnunet_ext.experiments.clot.harness import ClotHarness
from nnunet_ext.experiments.clot.profiles import CLOT_PROFILES
from nnunet_ext.experiments.clot.rows import Network
from nnunet_ext.provenance import provenance

EPOCH = re.compile(r"^Epoch (\d+)\s*$")
PSEUDO = re.compile(r"Pseudo dice \[(.*)\]")
ATTENTION = re.compile(r"attention: alpha (\S+), beta (\S+), entropy (\S+) of max")


def read_log(path: str) -> List[Dict]:
    """One entry per epoch: pseudo Dice (foreground class 1) and, for attention models, alpha, beta, entropy."""
    epochs: List[Dict] = []
    for line in open(path):
        text = line.split(": ", 1)[-1].strip()
        if EPOCH.match(text):
            epochs.append({"epoch": int(EPOCH.match(text).group(1))})
        elif epochs and PSEUDO.search(text):
            values = [v.strip() for v in PSEUDO.search(text).group(1).split(",") if v.strip()]
            epochs[-1]["pseudo_dice"] = float(values[0].replace("np.float32(", "").rstrip(")")) if values else None
        elif epochs and ATTENTION.search(text):
            alpha, beta, entropy = ATTENTION.search(text).groups()
            epochs[-1].update(alpha=float(alpha.rstrip(",")), beta=float(beta.rstrip(",")), entropy=float(entropy))
    return epochs


def summary(epochs: List[Dict]) -> Dict:
    dice = [(e["epoch"], e["pseudo_dice"]) for e in epochs if e.get("pseudo_dice") is not None]
    best_epoch, best = max(dice, key=lambda item: item[1]) if dice else (None, None)
    after_best = [d for epoch, d in dice if best_epoch is not None and epoch > best_epoch]
    last_50 = [d for _, d in dice[-50:]]
    return {"epochs": len(epochs), "best_pseudo_dice": best, "best_epoch": best_epoch,
            "mean_pseudo_dice_last_50": sum(last_50) / len(last_50) if last_50 else None,
            "epochs_at_zero_after_best": sum(1 for d in after_best if d == 0.0),
            "last": epochs[-1] if epochs else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--models", nargs="+", default=["AttLLSTM", "UpAttLLSTM"])
    parser.add_argument("--profile", default="quick_hard_400")
    parser.add_argument("--out", required=True, help="folder for the logs and pilot.json")
    args = parser.parse_args(argv)
    profile = CLOT_PROFILES[args.profile]
    harness = ClotHarness(args.workdir, profile, command=" ".join(sys.argv))
    os.makedirs(args.out, exist_ok=True)
    results = {}
    for model in args.models:
        network = Network(model, profile.default_slices)
        folder = harness.models.train(network, 1)
        logs = sorted(glob.glob(os.path.join(folder, "training_log_*.txt")), key=os.path.getmtime)
        epochs = [e for log in logs for e in read_log(log)]
        for log in logs:
            shutil.copy(log, os.path.join(args.out, f"{model}_{os.path.basename(log)}"))
        results[model] = {"trainer": network.trainer(profile), "plans": network.plans, **summary(epochs),
                          "per_epoch": epochs}
        print(model, json.dumps({k: v for k, v in results[model].items() if k != "per_epoch"}), flush=True)
    write_json_files({os.path.join(args.out, "pilot.json"): {
        "command": " ".join(["python", *sys.argv]), "profile": args.profile, "split": "validation", **provenance(),
        "results": results}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
