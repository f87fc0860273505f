"""`nnunet_ext_predict`: nnUNetv2_predict for input folders in which some channels are absent.

    nnunet_ext_predict -i IN -o OUT -d 501 -c 3d_fullres -f 0 -tr nnUNetTrainerGradualDrop_p05 --missing ADC

--missing NAME ...        treat these channels as absent in every case (files ignored)
--allow-missing NAME ...  these channels may lack a file in some cases
Absent channels become zero images with the geometry of a present channel. Every other option is passed
to nnUNetv2_predict unchanged (-i and -o are replaced by the prepared folder and OUT).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

from nnunet_ext.data.missing_channels import prepare_input_with_missing_channels
from nnunet_ext.dropout.config import channel_names_from_dataset_json
from nnunet_ext.paths import nnunet_environment

_SHADOWED_OPTIONS = ("-device", "-chk", "-prev_stage_predictions")


def add_shadowed_options(parser: argparse.ArgumentParser) -> None:
    """Declare the nnUNetv2_predict options that argparse would otherwise read as -d/-c/-p with an attached
    value (`-device` as `-d evice`), so that they can be passed through intact."""
    for option in _SHADOWED_OPTIONS:
        parser.add_argument(option, dest=option.lstrip("-"), default=None)


def shadowed_passthrough(args: argparse.Namespace) -> List[str]:
    passthrough = []
    for option in _SHADOWED_OPTIONS:
        if getattr(args, option.lstrip("-")) is not None:
            passthrough += [option, getattr(args, option.lstrip("-"))]
    return passthrough


def model_dataset_json(dataset: str, trainer: str, plans: str, configuration: str) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    folder = get_output_folder(dataset, trainer, plans, configuration)
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        raise ValueError(f"no trained model at {folder} (dataset.json missing); check -d, -tr, -p, -c and "
                         f"nnUNet_results")
    return load_json(path)


def run(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", dest="input", required=True)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", required=True)
    parser.add_argument("-tr", dest="trainer", default="nnUNetTrainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("--missing", nargs="+", default=[])
    parser.add_argument("--allow-missing", nargs="+", default=[])
    add_shadowed_options(parser)
    args, passthrough = parser.parse_known_args(argv)
    passthrough += shadowed_passthrough(args)

    try:
        dataset_json = model_dataset_json(args.dataset, args.trainer, args.plans, args.configuration)
        channel_names = channel_names_from_dataset_json(dataset_json)
        if not os.path.isdir(args.input):
            raise ValueError(f"input folder {args.input} does not exist")
        staging_root = tempfile.mkdtemp(prefix="nnunet_ext_predict_")
        try:
            prepared = prepare_input_with_missing_channels(
                args.input, os.path.join(staging_root, "input"), channel_names, dataset_json["file_ending"],
                missing=args.missing, allow_missing=args.allow_missing)
        except BaseException:
            shutil.rmtree(staging_root, ignore_errors=True)
            raise
    except (ValueError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    try:
        filled = sum(len(v) for v in prepared.zero_filled.values())
        print(f"nnunet_ext_predict: {len(prepared.cases)} cases, {filled} absent channel image(s) zero-filled "
              f"({', '.join(args.missing) or 'none forced'})", flush=True)
        command = ["nnUNetv2_predict", "-i", os.path.join(staging_root, "input"), "-o", args.output,
                   "-d", args.dataset, "-c", args.configuration, "-tr", args.trainer, "-p", args.plans, *passthrough]
        return subprocess.run(command, env=nnunet_environment()).returncode
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
