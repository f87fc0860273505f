"""What a trained clot model gets right and wrong on its training and validation crops (never the test cases).

    python benchmarks/clot_crop_outcomes.py --workdir /tmp/pilot_clot --plans nnUNetPlans_UpAttLLSTM_s8 \
        [--trainer nnUNetTrainerUpAttLLSTM_400epochs] [--fold 0] [--checkpoints checkpoint_best.pth checkpoint_final.pth]

Builds the trainer of a finished training (its plans, dataset and fold in the harness workdir), draws crops with
its own loaders (the clot sampling of training and validation, seeded) and counts, per checkpoint, the true
positive, false positive and false negative voxels on crops holding a clot and on clot-free crops, and the
pooled Dice. A training that fits its training crops and loses its validation crops is over-fitting; whether it
loses them by false positives or by missing the clot says where. `--added-noise K ...` repeats the training crops
with fresh Gaussian noise of K times each channel's own noise level added (estimated from the crops, below): a
network that learned the training cases' noise realisations by heart loses its training crops under fresh noise
of the images' own level, one that learned the clots' appearance loses a little, as from any SNR drop.
`--zoom F ...` repeats both splits with the crops resampled in-plane by F (image bilinear, label alike, > 0.5; the
crop size kept: zero padding below 1, centre crop above), so the same clot appears F x as wide: a network that
learned how large the training clots are loses clots that are larger (or smaller) than those. The checkpoints are read from a copy, so the
training folder gets no log of ours. Prints one line per (checkpoint, split) and writes them to --out (JSON).
"""
import argparse
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

SPLITS = (("validation", 60), ("training", 30))  # batches drawn from each loader


def channel_noise_levels(images: torch.Tensor) -> torch.Tensor:
    """Per channel of (batch, channel, *spatial) images, the noise standard deviation estimated from differences of
    in-plane neighbours: median |x[i+1] - x[i]| / (sqrt(2) * 0.6745), the MAD estimate of white noise's std (the
    smooth anatomy adds little to most neighbour differences); zero where a channel is constant (an absent one)."""
    differences = (images[..., 1:] - images[..., :-1]).transpose(0, 1).reshape(images.shape[1], -1)
    return differences.abs().median(dim=1).values / (2 ** 0.5 * 0.6745)


def zoom_in_plane(volumes: torch.Tensor, factor: float, mode: str = "trilinear") -> torch.Tensor:
    """(batch, channel, slices, rows, columns) resampled in-plane by `factor` and brought back to the same size:
    zero padding around it (factor < 1) or its centre (factor > 1); slices untouched."""
    if factor == 1:
        return volumes
    rows, columns = volumes.shape[-2:]
    new_rows, new_columns = round(rows * factor), round(columns * factor)
    resized = torch.nn.functional.interpolate(volumes.float(), size=(volumes.shape[-3], new_rows, new_columns),
                                              mode=mode, align_corners=False)
    if factor < 1:
        pad_rows, pad_columns = rows - new_rows, columns - new_columns
        return torch.nn.functional.pad(resized, (pad_columns // 2, pad_columns - pad_columns // 2,
                                                 pad_rows // 2, pad_rows - pad_rows // 2))
    top, left = (new_rows - rows) // 2, (new_columns - columns) // 2
    return resized[..., top:top + rows, left:left + columns]


def crop_outcomes(network: torch.nn.Module, loader, batches: int, seed: int,
                  added_noise: Optional[torch.Tensor] = None, zoom: float = 1.0,
                  per_case: Optional[Dict[str, Dict[str, List[int]]]] = None) -> Dict[str, List[int]]:
    """{"clot": [crops, tp, fp, fn], "clot_free": [...]} over `batches` batches of `loader`; `added_noise`: a
    standard deviation per channel of Gaussian noise added to every crop before the network sees it; `zoom`: the
    crops (image and label) resampled in-plane by this factor first; `per_case`: a dict that receives the same
    counts per case (the batches' "keys", nnU-Net's case identifiers), so that one large clot does not decide a pooled
    Dice alone."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    counts = {"clot": [0, 0, 0, 0], "clot_free": [0, 0, 0, 0]}
    for _ in range(batches):
        batch = next(loader)
        data = zoom_in_plane(batch["data"], zoom)
        if added_noise is not None:
            data = data + torch.randn_like(data) * added_noise.view(1, -1, *([1] * (data.ndim - 2)))
        with torch.no_grad():
            predicted = network(data).argmax(1)
        target = batch["target"]
        target = target if target.ndim == predicted.ndim + 1 else target[:, None]
        target = (zoom_in_plane((target == 1).float(), zoom) > 0.5)[:, 0].long()
        for index, (p, t) in enumerate(zip(predicted, target)):
            kind = "clot" if bool((t > 0).any()) else "clot_free"
            outcome = [1, int(((p == 1) & (t == 1)).sum()), int(((p == 1) & (t != 1)).sum()),
                       int(((p != 1) & (t == 1)).sum())]
            rows = [counts[kind]]
            if per_case is not None:
                case = str(batch["keys"][index])
                rows.append(per_case.setdefault(case, {"clot": [0, 0, 0, 0], "clot_free": [0, 0, 0, 0]})[kind])
            for row in rows:
                for position, value in enumerate(outcome):
                    row[position] += value
    return counts


def pooled_dice(counts: Dict[str, List[int]]) -> float:
    tp = counts["clot"][1]
    wrong = counts["clot"][2] + counts["clot"][3] + counts["clot_free"][2]
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 1.0


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--added-noise", type=float, nargs="*", default=[],
                        help="also evaluate the training crops with fresh noise of K x each channel's noise level")
    parser.add_argument("--zoom", type=float, nargs="*", default=[],
                        help="also evaluate both splits with the crops resampled in-plane by F")
    parser.add_argument("--out", default=None)
    return parser.parse_args()


def build_trainer(args: argparse.Namespace, results_root: str):
    """The finished training's trainer (its plans, dataset and fold in the harness workdir), initialised on CPU
    with its results folder under `results_root` (a scratch copy: the training folder gets no log of ours)."""
    os.environ.update(nnUNet_raw=os.path.join(args.workdir, "nnUNet_raw"),
                      nnUNet_preprocessed=os.path.join(args.workdir, "nnUNet_preprocessed"),
                      nnUNet_results=results_root, nnUNet_n_proc_DA="0", nnUNet_compile="false")
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunet_ext.paths import trainer_dir
    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], args.dataset)
    plans = load_json(os.path.join(preprocessed, f"{args.plans}.json"))
    plans["continue_training"] = False  # nnUNetTrainer reads this key since nnunetv2 2.8
    trainer_class = recursive_find_python_class(trainer_dir(), args.trainer, "nnunet_ext_trainers")
    torch.set_num_threads(1)
    trainer = trainer_class(plans, "3d_fullres", args.fold, load_json(os.path.join(preprocessed, "dataset.json")),
                            torch.device("cpu"))
    trainer.initialize()
    return trainer


def checkpoint_results(network: torch.nn.Module, name: str, checkpoint: Dict, loaders: Dict, runs: List[Tuple],
                       noise_level: torch.Tensor, seed: int) -> Dict[str, Dict]:
    """One checkpoint's outcomes for every (split, batches, noise factor or None, zoom) of `runs`, printed."""
    network.load_state_dict(checkpoint["network_weights"])
    network.eval()
    results = {}
    for split, batches, noise, zoom in runs:
        per_case: Dict[str, Dict[str, List[int]]] = {}
        counts = crop_outcomes(network, loaders[split], batches, seed,
                               None if noise is None else noise_level * noise, zoom, per_case)
        label = split + (f", noise x{noise:g}" if noise is not None else "") + (f", zoom x{zoom:g}"
                                                                                 if zoom != 1 else "")
        clot, free = counts["clot"], counts["clot_free"]
        line = (f"{name} (epoch {checkpoint['current_epoch']}) {label}: clot crops {clot[0]}: TP {clot[1]} "
                f"FP {clot[2]} FN {clot[3]}; clot-free crops {free[0]}: FP {free[2]}; pooled Dice "
                f"{pooled_dice(counts):.3f}")
        if split == "validation":  # a handful of cases: each one's own pooled Dice
            line += "; per case: " + ", ".join(f"{case} {pooled_dice(c):.2f} ({c['clot'][0]}+{c['clot_free'][0]})"
                                               for case, c in sorted(per_case.items()))
        print(line, flush=True)
        results[f"{name} {label}"] = {"epoch": checkpoint["current_epoch"], "counts": counts,
                                      "pooled_dice": round(pooled_dice(counts), 4), "line": line,
                                      "per_case": {case: {**c, "pooled_dice": round(pooled_dice(c), 4)}
                                                   for case, c in sorted(per_case.items())}}
    return results


def main() -> None:
    args = parse_args()
    folder_name = f"{args.trainer}__{args.plans}__3d_fullres"
    fold_folder = os.path.join(args.workdir, "nnUNet_results", args.dataset, folder_name, f"fold_{args.fold}")
    scratch = tempfile.mkdtemp(prefix="clot_crop_outcomes_")
    copy = os.path.join(scratch, args.dataset, folder_name, f"fold_{args.fold}")
    os.makedirs(copy)
    for name in args.checkpoints:
        shutil.copy(os.path.join(fold_folder, name), copy)
    trainer = build_trainer(args, scratch)
    from nnunet_ext.data.splits import write_json_files
    from nnunet_ext.provenance import provenance
    loaders = dict(zip(("training", "validation"), trainer.get_dataloaders()))
    report = {"fold_folder": fold_folder, "trainer": args.trainer, "plans": args.plans, "results": {},
              "provenance": provenance(seed=args.seed, command=" ".join([os.path.basename(sys.executable)] + sys.argv))}
    np.random.seed(args.seed)
    noise_level = channel_noise_levels(next(loaders["validation"])["data"])
    report["channel_noise_levels"] = [round(float(v), 4) for v in noise_level]
    print("noise level per channel (normalised units):", report["channel_noise_levels"], flush=True)
    runs = ([(split, batches, None, 1.0) for split, batches in SPLITS]
            + [("training", SPLITS[1][1], k, 1.0) for k in args.added_noise]
            + [(split, batches, None, f) for f in args.zoom for split, batches in SPLITS])
    for name in args.checkpoints:
        checkpoint = torch.load(os.path.join(copy, name), map_location="cpu", weights_only=False)
        report["results"].update(checkpoint_results(trainer.network, name, checkpoint, loaders, runs, noise_level,
                                                    args.seed))
    shutil.rmtree(scratch)
    if args.out:
        write_json_files({args.out: report})


if __name__ == "__main__":
    main()
