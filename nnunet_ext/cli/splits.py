"""`nnunet_ext_splits`: nnU-Net splits_final.json from case_centers.json, in-domain or leave-center-out.

    nnunet_ext_splits -d 501 [-k 5] [--seed 12345] [--hold-out D]
        reads $nnUNet_raw/Dataset501_*/case_centers.json, keeps the cases of its labelsTr, writes
        $nnUNet_preprocessed/Dataset501_*/splits_final.json (and test_cases.json with --hold-out)
    nnunet_ext_splits --centers case_centers.json -o OUT [--cases-in labelsTr] [-k 5] [--hold-out D]
        OUT is a .json file or a folder (then OUT/splits_final.json)
"""
import argparse
import os
import shlex
import sys

from batchgenerators.utilities.file_and_folder_operations import load_json

from nnunet_ext.data.splits import leave_center_out, restrict_to, stratified_kfold, validation_counts, write_splits
from nnunet_ext.provenance import provenance


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-d", "--dataset", help="nnU-Net dataset id or name (uses nnUNet_raw / nnUNet_preprocessed)")
    source.add_argument("--centers", help="JSON file mapping case -> center")
    parser.add_argument("-o", "--output", help="splits_final.json path or folder (default with -d: the dataset's "
                                               "preprocessed folder)")
    parser.add_argument("--cases-in", help="only cases with a label file in this folder (default with -d: labelsTr)")
    parser.add_argument("--file-ending", default=".nii.gz")
    parser.add_argument("-k", "--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--hold-out", nargs="+", default=[], metavar="CENTER",
                        help="leave-center-out: these centers' cases become the test set (test_cases.json)")
    return parser


def _inputs(args):
    """(case->center map, cases to keep or None, output path)."""
    if args.dataset:
        from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
        if not nnUNet_raw or not (nnUNet_preprocessed or args.output):
            raise ValueError("-d needs nnUNet_raw and nnUNet_preprocessed (or -o) set in the environment")
        name = maybe_convert_to_dataset_name(args.dataset)
        centers_file = os.path.join(nnUNet_raw, name, "case_centers.json")
        cases_in = args.cases_in or os.path.join(nnUNet_raw, name, "labelsTr")
        output = args.output or os.path.join(nnUNet_preprocessed, name)
    else:
        centers_file, cases_in, output = args.centers, args.cases_in, args.output
        if not output:
            raise ValueError("--centers needs -o (a splits_final.json path or a folder)")
    if not os.path.isfile(centers_file):
        raise ValueError(f"no case->center map at {centers_file}")
    case_centers = load_json(centers_file)
    cases = None
    if cases_in:
        if not os.path.isdir(cases_in):
            raise ValueError(f"--cases-in folder {cases_in} does not exist")
        cases = sorted(f[:-len(args.file_ending)] for f in os.listdir(cases_in) if f.endswith(args.file_ending))
        if not cases:
            raise ValueError(f"no *{args.file_ending} files in {cases_in}")
    if not output.endswith(".json"):
        output = os.path.join(output, "splits_final.json")
    return case_centers, cases, output


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        case_centers, cases, output = _inputs(args)
        if cases is not None:
            case_centers = restrict_to(case_centers, cases)
        if args.hold_out:
            splits, test_cases = leave_center_out(case_centers, args.hold_out, args.folds, args.seed)
        else:
            splits, test_cases = stratified_kfold(case_centers, args.folds, args.seed), None
        written = write_splits(splits, output, test_cases, args.hold_out,
                               provenance(seed=args.seed, command=shlex.join(["nnunet_ext_splits", *argv])))
    except (ValueError, OSError, RuntimeError) as error:  # nnU-Net raises RuntimeError for an unknown dataset id
        sys.exit(f"error: {error}")
    for fold, counts in enumerate(validation_counts(splits, case_centers)):
        print(f"fold {fold}: {len(splits[fold]['train'])} train, {len(splits[fold]['val'])} val "
              f"({', '.join(f'{m}: {n}' for m, n in counts.items())})")
    if test_cases is not None:
        print(f"test (held out {', '.join(args.hold_out)}): {len(test_cases)} case(s)")
    print("wrote " + " and ".join(written.values()))


if __name__ == "__main__":
    main()
