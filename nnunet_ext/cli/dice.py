"""`nnunet_ext_dice`: Dice of a prediction folder against reference labels, per case, per center and overall."""
import argparse
import json
import sys

from nnunet_ext.evaluation.folders import dice_per_case, summarize_by_center


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("predictions")
    parser.add_argument("references")
    parser.add_argument("--centers", help="JSON file mapping case -> center (the cohort's case_centers.json)")
    parser.add_argument("--label", type=int, default=1)
    parser.add_argument("--file-ending", default=".nii.gz")
    parser.add_argument("--json", help="also write per-case scores and the summary to this file")
    args = parser.parse_args(argv)
    try:
        scores = dice_per_case(args.predictions, args.references, args.file_ending, args.label)
        centers = None
        if args.centers:
            with open(args.centers) as f:
                centers = json.load(f)
        summary = summarize_by_center(scores, centers)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    for name, values in summary.items():
        print(f"{name:>6}: Dice {values['mean']:.3f} ± {values['std']:.3f} (n={values['n']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_case": scores, "summary": summary, "command": " ".join(sys.argv)}, f, indent=2)


if __name__ == "__main__":
    main()
