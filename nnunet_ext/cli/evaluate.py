"""`nnunet_ext_evaluate`: Dice, volume difference and lesion-wise metrics of a prediction folder, per center.

Writes OUT/per_case.csv (one row per case and label) and OUT/summary.json (mean ± std per center and overall,
lesion totals, settings, command and versions), as a set: both new, or neither changed. Nothing is written if
any case fails a check.
"""
import argparse
import math
import os
import shlex
import sys

from tqdm import tqdm

from nnunet_ext.data.splits import read_case_map
from nnunet_ext.evaluation.evaluate import EvaluationSettings, evaluate_folders, summarize, write_results
from nnunet_ext.evaluation.lesion_metrics import CONNECTIVITIES, MATCHING_RULES, LesionMatching
from nnunet_ext.provenance import provenance

_SHOWN = (("dice", "Dice"), ("abs_volume_difference_ml", "AVD ml"), ("lesion_f1", "lesion F1"),
          ("detection_rate", "detection"), ("abs_lesion_count_difference", "|Δ count|"))


def build_parser() -> argparse.ArgumentParser:
    defaults = LesionMatching()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", help="folder of predicted label files (CASE.nii.gz)")
    parser.add_argument("references", help="folder of reference label files (e.g. labelsTs)")
    parser.add_argument("-o", "--output", required=True, help="folder for per_case.csv and summary.json")
    parser.add_argument("--centers", help="JSON file mapping case -> center (e.g. the dataset's case_centers.json), "
                                          "or case -> record with --group-key (e.g. the clot cohort's occlusions.json)")
    parser.add_argument("--group-key", help="with --centers holding a record per case: the field to group by, "
                                            "e.g. 'occlusion' for proximal/distal")
    parser.add_argument("--label", type=int, nargs="+", default=[1],
                        help="label value(s) to evaluate, each separately; every other nonzero value is an error")
    parser.add_argument("--matching", choices=MATCHING_RULES, default=defaults.rule,
                        help="lesion matching: any overlap (ISLES'22), IoU above --iou, centroids within "
                             "--distance-mm (default: %(default)s)")
    parser.add_argument("--iou", type=float, default=defaults.iou_threshold,
                        help="IoU threshold (default: %(default)s)")
    parser.add_argument("--distance-mm", type=float, default=defaults.distance_mm,
                        help="centroid distance in mm (default: %(default)s)")
    parser.add_argument("--connectivity", type=int, choices=CONNECTIVITIES, default=defaults.connectivity)
    parser.add_argument("--file-ending", default=".nii.gz")
    parser.add_argument("-np", "--num-processes", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return parser


def _format(value) -> str:
    if value["mean"] is None or math.isnan(value["mean"]):
        return "n/a"
    return f"{value['mean']:.3f} ± {value['std']:.2f}"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        settings = EvaluationSettings(
            labels=tuple(args.label), file_ending=args.file_ending,
            matching=LesionMatching(args.matching, args.iou, args.distance_mm, args.connectivity))
        if args.group_key and not args.centers:
            raise ValueError("--group-key needs --centers (the file whose records it groups by)")
        centers = read_case_map(args.centers, args.group_key) if args.centers else None
        progress = None if args.quiet else (
            lambda iterable, total: tqdm(iterable, total=total, desc="evaluating", unit="case", file=sys.stderr))
        rows = evaluate_folders(args.predictions, args.references, settings, centers, args.num_processes, progress)
        summary = summarize(rows)
        csv_path, json_path = write_results(args.output, rows, summary, settings,
                                            provenance(command=shlex.join(["nnunet_ext_evaluate", *argv])))
    except (ValueError, OSError, RuntimeError) as error:  # SimpleITK raises RuntimeError on unreadable files
        sys.exit(f"error: {error}")
    if not args.quiet:
        for label, per_center in summary.items():
            print(f"label {label}\n{'center':>10} {'n':>4}" + "".join(f"{title:>16}" for _, title in _SHOWN))
            for center, values in per_center.items():
                print(f"{center:>10} {values['cases']:>4}" + "".join(f"{_format(values[k]):>16}" for k, _ in _SHOWN))
    extra = [f for f in os.listdir(args.predictions) if f.endswith(args.file_ending)
             and not os.path.isfile(os.path.join(args.references, f))]
    if extra:
        print(f"note: {len(extra)} prediction(s) without a reference were not evaluated: "
              f"{', '.join(sorted(extra)[:5])}")
    print(f"wrote {csv_path} and {json_path}")


if __name__ == "__main__":
    main()
