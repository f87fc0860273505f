"""`nnunet_ext_generate_cohort`: write the synthetic multi-center stroke cohort as an nnU-Net raw dataset."""
import argparse
import os
import sys

from nnunet_ext.data.synthetic_cohort import CENTERS, CHANNELS, CohortSpec, write_cohort


def build_parser() -> argparse.ArgumentParser:
    defaults = CohortSpec()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", default=os.environ.get("nnUNet_raw"),
                        help="nnUNet_raw folder to write into (default: $nnUNet_raw)")
    parser.add_argument("-d", "--dataset-id", type=int, default=defaults.dataset_id)
    parser.add_argument("--name", default=defaults.name)
    parser.add_argument("--train-per-center", type=int, default=defaults.train_per_center)
    parser.add_argument("--test-per-center", type=int, default=defaults.test_per_center)
    parser.add_argument("--size", type=int, default=defaults.size, help="voxels a side at 1 mm spacing")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--centers", nargs="+", default=list(defaults.centers),
                        help=f"subset of {' '.join(c.name for c in CENTERS)} (D has no B0)")
    parser.add_argument("--droppable", nargs="+", default=list(defaults.droppable_channels),
                        help=f"channels written as dataset.json droppable_channels, from {' '.join(CHANNELS)}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if not args.raw:
        sys.exit("error: no output folder: pass --raw or set nnUNet_raw")
    try:
        spec = CohortSpec(dataset_id=args.dataset_id, name=args.name, train_per_center=args.train_per_center,
                          test_per_center=args.test_per_center, size=args.size, seed=args.seed,
                          droppable_channels=tuple(args.droppable), centers=tuple(args.centers))
        folder = write_cohort(spec, args.raw, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
