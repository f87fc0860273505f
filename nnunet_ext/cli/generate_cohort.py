"""`nnunet_ext_generate_cohort`: write a synthetic multi-center cohort as an nnU-Net raw dataset.

--kind stroke (default): the stroke-lesion cohort (DWI, ADC, B0; dataset 501).
--kind clot: the clot cohort (DWI, SWAN, PHASE; dataset 502), with lesion labels in labelsTr_lesion /
labelsTs_lesion and the occlusion of every case in occlusions.json; --preset easy (default) or hard.
"""
import argparse
import os
import sys

from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
from nnunet_ext.data.clot_presets import CHANNELS as CLOT_CHANNELS
from nnunet_ext.data.clot_presets import CLOT_CENTERS, CLOT_PRESETS
from nnunet_ext.data.synthetic_cohort import CENTERS, CHANNELS, CohortSpec, write_cohort

KINDS = {"stroke": (CohortSpec, write_cohort), "clot": (ClotCohortSpec, write_clot_cohort)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=list(KINDS), default="stroke", help="which cohort (default: stroke)")
    parser.add_argument("--raw", default=os.environ.get("nnUNet_raw"),
                        help="nnUNet_raw folder to write into (default: $nnUNet_raw)")
    parser.add_argument("-d", "--dataset-id", type=int, default=None, help="default: 501 (stroke), 502 (clot)")
    parser.add_argument("--name", default=None, help="default: SyntheticStroke / SyntheticClot")
    parser.add_argument("--train-per-center", type=int, default=None, help="default: 6")
    parser.add_argument("--test-per-center", type=int, default=None, help="default: 2")
    parser.add_argument("--size", type=int, default=None,
                        help="field of view in mm (stroke: voxels a side at 1 mm; default 48 stroke, 64 clot)")
    parser.add_argument("--seed", type=int, default=None, help="default: 0")
    parser.add_argument("--centers", nargs="+", default=None,
                        help=f"stroke: subset of {' '.join(c.name for c in CENTERS)} (D has no B0); "
                             f"clot: subset of {' '.join(c.name for c in CLOT_CENTERS)} (C: SWI, no PHASE)")
    parser.add_argument("--droppable", nargs="+", default=None,
                        help=f"channels written as dataset.json droppable_channels (stroke: from {' '.join(CHANNELS)}, "
                             f"default ADC; clot: from {' '.join(CLOT_CHANNELS)}, default PHASE)")
    parser.add_argument("--proximal-fraction", type=float, default=None,
                        help="clot only: share of proximal occlusions (default 0.5)")
    parser.add_argument("--preset", choices=list(CLOT_PRESETS), default=None,
                        help="clot only: cohort preset (default easy; hard: small low-contrast clots, thick slices, "
                             "low-resolution DWI, slice mimics; benchmarks/results/clot_cohort_hard.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if not args.raw:
        sys.exit("error: no output folder: pass --raw or set nnUNet_raw")
    spec_class, write = KINDS[args.kind]
    given = {"dataset_id": args.dataset_id, "name": args.name, "train_per_center": args.train_per_center,
             "test_per_center": args.test_per_center, "size": args.size, "seed": args.seed,
             "centers": tuple(args.centers) if args.centers else None,
             "droppable_channels": tuple(args.droppable) if args.droppable else None}
    if args.proximal_fraction is not None:
        if args.kind != "clot":
            sys.exit("error: --proximal-fraction applies to --kind clot only")
        given["proximal_fraction"] = args.proximal_fraction
    if args.preset is not None:
        if args.kind != "clot":
            sys.exit("error: --preset applies to --kind clot only")
        given["preset"] = args.preset
    try:
        spec = spec_class(**{key: value for key, value in given.items() if value is not None})
        folder = write(spec, args.raw, overwrite=args.overwrite)
    except (ValueError, FileExistsError, OSError) as error:  # OSError: e.g. the disk filled up (nothing is left)
        sys.exit(f"error: {error}")
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
