"""`nnunet_ext_robustness`: Dice of one trained model for every non-empty subset of its input channels.

    nnunet_ext_robustness -i imagesTs -r labelsTs -o OUT -d 501 -c 3d_fullres -f 0 -tr TRAINER \
        [-p PLANS] [--centers case_centers.json] [other nnUNetv2_predict options]

Writes OUT/robustness.{md,csv,json,png} (subset x center -> Dice).
"""
import argparse
import json
import sys

from nnunet_ext.cli.predict_missing import add_shadowed_options, model_dataset_json, shadowed_passthrough
from nnunet_ext.dropout.config import channel_names_from_dataset_json
from nnunet_ext.experiments.stroke.robustness import robustness_matrix, write_robustness_report
from nnunet_ext.provenance import provenance


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", dest="images", required=True)
    parser.add_argument("-r", dest="labels", required=True)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", required=True)
    parser.add_argument("-tr", dest="trainer", default="nnUNetTrainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("--centers", help="case -> center JSON")
    parser.add_argument("--no-rebuild-rows", action="store_true",
                        help="no rows with an absent diffusion channel rebuilt from the two others (B0 = DWI * "
                             "exp(b * ADC)); --b-value / --adc-unit are passed to nnunet_ext_predict")
    add_shadowed_options(parser)
    args, passthrough = parser.parse_known_args(argv)
    passthrough += shadowed_passthrough(args)
    try:
        names = channel_names_from_dataset_json(model_dataset_json(args.dataset, args.trainer, args.plans,
                                                                   args.configuration))
        centers = json.load(open(args.centers)) if args.centers else None
        predict_args = ["-d", args.dataset, "-c", args.configuration, "-tr", args.trainer, "-p", args.plans,
                        *passthrough]
        matrix = robustness_matrix(args.images, args.labels, args.output, names, predict_args, centers,
                                   rebuild_rows=not args.no_rebuild_rows)
    except (ValueError, RuntimeError, OSError) as error:
        sys.exit(f"error: {error}")
    command = "nnunet_ext_robustness " + " ".join(sys.argv[1:] if argv is None else argv)
    paths = write_robustness_report(matrix, args.output, command, provenance())
    print(open(paths["md"]).read())


if __name__ == "__main__":
    main()
