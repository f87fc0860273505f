"""How long and how wide every clot of a clot dataset is, slice by slice, from its raw labels.

    python benchmarks/clot_shapes.py --dataset /tmp/pilot_clot/nnUNet_raw/Dataset531_ClotTrainAB \
        [--splits .../splits_final.json] [--fold 0] [--out shapes.json]

A clot slice's pixels are taken as points; the eigenvalues of their covariance give its extent along and across
its main axis. For a discrete line of n pixels the variance along it is (n^2 - 1) / 12, so length =
sqrt(12 * lambda_max + 1) is exact for an a x b block of pixels (length a), and width = pixels / length gives its b.
Prints one line per case of labelsTr (its widest slice; its role, training or validation, where --splits is given)
and writes every slice to --out (JSON). Only the training cases' labels are read: labelsTs is left alone, like
every test case in a pilot.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional

import nibabel as nib
import numpy as np

SLICE_AXIS = 2  # the raw clot volumes are (rows, columns, slices) in NIfTI order


def slice_shape(mask: np.ndarray) -> Dict[str, float]:
    """{"pixels", "length", "width", "across_sd"} of a 2D boolean mask holding one clot slice; across_sd is the
    standard deviation of the pixels across the main axis, sqrt(lambda_min)."""
    points = np.argwhere(mask).astype(float)
    if len(points) == 0:
        raise ValueError("the mask holds no pixel")
    eigenvalues = np.linalg.eigvalsh(np.cov(points.T, bias=True)) if len(points) > 1 else np.zeros(2)
    length = float(np.sqrt(12 * max(eigenvalues[-1], 0.0) + 1))
    return {"pixels": int(len(points)), "length": length, "width": len(points) / length,
            "across_sd": float(np.sqrt(max(eigenvalues[0], 0.0)))}


def volume_shapes(label: np.ndarray, slice_axis: int = SLICE_AXIS) -> List[Dict[str, float]]:
    """slice_shape of every slice of a label volume that holds foreground (> 0), with its slice index."""
    slices = np.moveaxis(label > 0, slice_axis, 0)
    return [{"slice": index, **slice_shape(plane)} for index, plane in enumerate(slices) if plane.any()]


def dataset_shapes(dataset: str, roles: Optional[Dict[str, str]] = None) -> Dict[str, dict]:
    """{case: {"role", "slices": volume_shapes}} for every label of labelsTr of a raw nnU-Net dataset folder (role
    from `roles`, else "training"); the test labels (labelsTs) are not read."""
    folder = os.path.join(dataset, "labelsTr")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no labelsTr folder in {dataset}")
    shapes = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".nii.gz"):
            case = name[:-len(".nii.gz")]
            label = np.asanyarray(nib.load(os.path.join(folder, name)).dataobj)
            shapes[case] = {"role": (roles or {}).get(case, "training"), "slices": volume_shapes(label)}
    return shapes


def split_roles(splits_file: str, fold: int) -> Dict[str, str]:
    """{case: "training" | "validation"} of one fold of nnU-Net's splits_final.json."""
    with open(splits_file) as handle:
        splits = json.load(handle)
    if not 0 <= fold < len(splits):
        raise ValueError(f"{splits_file} has {len(splits)} folds, no fold {fold}")
    return {**{c: "training" for c in splits[fold]["train"]}, **{c: "validation" for c in splits[fold]["val"]}}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="raw nnU-Net dataset folder (labelsTr, labelsTs)")
    parser.add_argument("--splits", help="splits_final.json naming the training and validation cases")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--out", help="JSON file for every clot slice")
    args = parser.parse_args(argv)
    shapes = dataset_shapes(args.dataset, split_roles(args.splits, args.fold) if args.splits else None)
    for case, entry in shapes.items():
        widest = max(entry["slices"], key=lambda s: s["width"], default=None)
        text = ("no clot" if widest is None else
                f"widest slice {widest['slice']}: {widest['pixels']} px, length {widest['length']:.1f}, "
                f"width {widest['width']:.2f}, across s.d. {widest['across_sd']:.2f}")
        print(f"{case} ({entry['role']}): {len(entry['slices'])} clot slices, {text}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"command": " ".join(["python benchmarks/clot_shapes.py"] + (argv or sys.argv[1:])),
                       "versions": {"numpy": np.__version__, "nibabel": nib.__version__},
                       "cases": shapes}, handle, indent=1)


if __name__ == "__main__":
    main()
