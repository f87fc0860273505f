"""`nnunet_ext_convert`: write ISLES'22 (`isles22`) or a JHU-style tree (`jhu`) as an nnU-Net raw dataset.

The dataset appears in --raw (default $nnUNet_raw) as Dataset<ID>_<Name>, complete or not at all; skipped
cases are printed and listed with their reason in its conversion_report.json.
"""
import argparse
import os
import shlex
import sys

from tqdm import tqdm

from nnunet_ext.data.diffusion import ADC_UNITS
from nnunet_ext.data.converters import MISSING_B0, JhuLayout, convert_isles22, convert_jhu
from nnunet_ext.data.splits import read_case_map


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="source", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("root", help="the source dataset's folder")
    common.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (1..999)")
    common.add_argument("--raw", default=os.environ.get("nnUNet_raw"),
                        help="nnUNet_raw folder to write into (default: $nnUNet_raw)")
    common.add_argument("--droppable", nargs="+", default=["ADC"],
                        help="channels written as dataset.json droppable_channels (default: ADC)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    isles = commands.add_parser("isles22", parents=[common], help="ISLES'22 BIDS layout (DWI, ADC[, FLAIR])",
                                description="ISLES-2022/sub-*/ses-*/{dwi,anat}/..., masks under derivatives/")
    isles.add_argument("--name", default="ISLES22")
    isles.add_argument("--flair", action="store_true",
                       help="add FLAIR as a third channel, resampled onto the DWI grid (world coordinates, "
                            "no registration)")
    isles.add_argument("--rebuild-b0", action="store_true",
                       help="add a B0 channel rebuilt from DWI and ADC (B0 = DWI * exp(b * ADC)): channels DWI, ADC, "
                            "B0[, FLAIR], to match a DWI + ADC + B0 dataset")
    isles.add_argument("--b-value", type=float, default=None,
                       help="b of the DWI in s/mm2 (default: the DWI's sidecar JSON where it states one, else 1000)")
    isles.add_argument("--adc-unit", choices=sorted(ADC_UNITS), default=None,
                       help="unit of the ADC maps (default: detected from the tissue median)")

    jhu = commands.add_parser("jhu", parents=[common], help="one folder per subject with DWI, ADC, B0, mask",
                              description="ROOT/<subject>/<subject>_DWI.nii.gz etc.; patterns below")
    defaults = JhuLayout()
    jhu.add_argument("--name", default="JHU")
    for key in ("dwi", "adc", "b0", "mask"):
        jhu.add_argument(f"--{key}-pattern", default=getattr(defaults, key),
                         help="file name in the subject's folder (default: %(default)s)")
    jhu.add_argument("--missing-b0", choices=MISSING_B0, default="zero",
                     help="zero: a zero image on the DWI grid (default); skip: skip the case")
    jhu.add_argument("--centers", help="JSON file mapping subject -> center (default: every subject is 'JHU')")
    return parser


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    command = shlex.join(["nnunet_ext_convert", *argv])
    if not args.raw:
        sys.exit("error: no output folder: pass --raw or set nnUNet_raw")
    progress = None if args.quiet else (
        lambda iterable, total: tqdm(iterable, total=total, desc="converting", unit="case", file=sys.stderr))
    try:
        if args.source == "isles22":
            report = convert_isles22(args.root, args.raw, args.dataset_id, args.name, args.flair, args.droppable,
                                     args.overwrite, progress, command, args.rebuild_b0, args.b_value, args.adc_unit)
        else:
            centers = read_case_map(args.centers) if args.centers else None
            layout = JhuLayout(args.dwi_pattern, args.adc_pattern, args.b0_pattern, args.mask_pattern)
            report = convert_jhu(args.root, args.raw, args.dataset_id, args.name, layout, args.missing_b0, centers,
                                 droppable_channels=args.droppable, overwrite=args.overwrite, progress=progress,
                                 command=command)
    except (ValueError, FileExistsError, OSError) as error:
        sys.exit(f"error: {error}")
    for entry in report.skipped:
        print(f"skipped {entry['case']}: {entry['reason']}")
    print(f"wrote {report.dataset_folder}: {len(report.converted)} case(s) converted, {len(report.skipped)} skipped "
          f"(listed in conversion_report.json)")


if __name__ == "__main__":
    main()
