"""`nnunet_ext_predict`: nnUNetv2_predict for input folders in which some channels are absent.

    nnunet_ext_predict -i IN -o OUT -d 501 -c 3d_fullres -f 0 -tr nnUNetTrainerGradualDrop_p05 --missing ADC

--missing NAME ...        treat these channels as absent in every case (files ignored)
--allow-missing NAME ...  these channels may lack a file in some cases; only channels the model was trained
                          to drop (its fold_X/nnunet_ext_settings.json), unless --allow-untrained-missing
--rebuild B0|ADC|DWI ...  rebuild these channels where absent from the two other diffusion channels of the
                          case (B0 = DWI * exp(b * ADC), ...; --b-value, --adc-unit) instead of zero-filling
Absent channels become zero images with the geometry of a present channel. Every other option is passed
to nnUNetv2_predict unchanged (-i and -o are replaced by the prepared folder and OUT). Everything is checked
before OUT is created: the model and its folds, the images (whole files, finite voxels, one grid per case);
a failed prediction removes the OUT it created, SIGTERM removes the temporary copy (and an OUT it created that holds
no prediction yet), and the next run removes the temporary copies of killed runs. OUT must be new, empty, or hold
predictions made with the same settings (what --continue_prediction continues): OUT/nnunet_ext_predict.json, written
before nnU-Net starts ("complete": false) and when it has finished, records them. It lists the zero-filled channels,
the rebuilt ones and how (equation, b and where it came from, ADC unit and how it was told, noise floors), and any
warning (a zero-filled channel the model was not trained to drop).
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from nnunet_ext.data.diffusion import ADC_UNITS, DEFAULT_B_VALUE, SOURCES
from nnunet_ext.data.missing_channels import PreparedInput, RebuildSettings, prepare_input_with_missing_channels
from nnunet_ext.data.nifti import ImageFileError, read_image_checked
from nnunet_ext.data.prediction_output import REPORT_FILE, check_output_folder, prediction_defining_options
from nnunet_ext.data.splits import write_json_files
from nnunet_ext.data.staging import make_private_folder
from nnunet_ext.dropout.config import channel_names_from_dataset_json
from nnunet_ext.paths import nnunet_environment
from nnunet_ext.provenance import provenance
from nnunet_ext.training.settings_file import SETTINGS_FILE, read_settings_file

_SHADOWED_OPTIONS = ("-device", "-chk", "-prev_stage_predictions")
DEFAULT_FOLDS = ("0", "1", "2", "3", "4")  # nnUNetv2_predict's default
STAGING_PREFIX = "nnunet_ext_predict"  # the temporary copy of the inputs: <tmp>/nnunet_ext_predict-<host>-<pid>-<token>


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


def model_folder(dataset: str, trainer: str, plans: str, configuration: str) -> str:
    """The results folder of a trained model; ValueError (not nnU-Net's traceback) for an unknown dataset."""
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    try:
        return get_output_folder(dataset, trainer, plans, configuration)
    except (RuntimeError, ValueError) as error:  # unknown id, or nnUNet_results not set
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot find the model of dataset {dataset}: {first}") from None


def model_dataset_json(dataset: str, trainer: str, plans: str, configuration: str) -> dict:
    from batchgenerators.utilities.file_and_folder_operations import load_json
    folder = model_folder(dataset, trainer, plans, configuration)
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        raise ValueError(f"no trained model at {folder} (dataset.json missing); check -d, -tr, -p, -c and "
                         f"nnUNet_results")
    return load_json(path)


def check_folds(folder: str, folds: Sequence[str], checkpoint: str) -> None:
    """Every requested fold must hold `checkpoint`, checked before nnUNetv2_predict creates the output folder."""
    missing = [f for f in folds if not os.path.isfile(os.path.join(folder, f"fold_{f}", checkpoint))]
    if missing:
        available = sorted(name[len("fold_"):] for name in os.listdir(folder) if name.startswith("fold_")
                           and os.path.isfile(os.path.join(folder, name, checkpoint)))
        hint = f" (pass -f {' '.join(available)})" if available else ""
        raise ValueError(f"no {checkpoint} for fold(s) {', '.join(missing)} in {folder}; folds that have one: "
                         f"{', '.join(available) or 'none'}{hint}")
    for fold in folds:
        problem = checkpoint_problem(os.path.join(folder, f"fold_{fold}", checkpoint))
        if problem:
            raise ValueError(problem)


def unreadable_predictions(output_folder: str, cases: Sequence[str], file_ending: str) -> List[str]:
    """'<file>: <why>' for every case whose prediction is missing or does not read back whole."""
    problems = []
    for case in cases:
        path = os.path.join(output_folder, case + file_ending)
        try:
            read_image_checked(path, require_finite=False)
        except ImageFileError as error:
            problems.append(str(error))
    return problems


def checkpoint_problem(path: str) -> Optional[str]:
    """Why `path` cannot be a whole torch checkpoint (None if it can): torch.save writes a zip archive whose
    directory is at its end, so a file cut short has none (torch's own error, deep in nnU-Net's workers, says only
    'checkpoint file is corrupted'). Reads the directory, not the weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return (f"{path} is not a whole checkpoint ({error}); it was probably cut short while being copied or "
                f"written: copy it again, or train with --c")
    return None


def trained_droppable_channels(folder: str, folds: Sequence[str], channel_names: Sequence[str]) -> List[str]:
    """The channels every requested fold was trained to drop, from its nnunet_ext_settings.json; a fold without
    one (a stock or no-dropout trainer) was trained to drop none."""
    common = set(channel_names)
    for fold in folds:
        path = os.path.join(folder, f"fold_{fold}", SETTINGS_FILE)
        settings = read_settings_file(path) if os.path.isfile(path) else {}
        common &= set(settings.get("modality_dropout", {}).get("droppable_names", []))
    return [name for name in channel_names if name in common]


def model_image_dimension(folder: str) -> Optional[int]:
    """3 for a model trained on volumes (its plans have a 3d_fullres configuration); None when not known."""
    path = os.path.join(folder, "plans.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        configurations = json.load(f).get("configurations", {})
    return 3 if "3d_fullres" in configurations else None


class Terminated(SystemExit):
    """SIGTERM (a scheduler, `kill`): unwinds like Ctrl-C, so the temporary copy and an empty OUT are removed."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated(128 + signum)


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)  # through symlinks, as nnunet_ext_postprocess


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", dest="input", required=True)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("-d", dest="dataset", required=True)
    parser.add_argument("-c", dest="configuration", required=True)
    parser.add_argument("-tr", dest="trainer", default="nnUNetTrainer")
    parser.add_argument("-p", dest="plans", default="nnUNetPlans")
    parser.add_argument("-f", dest="folds", nargs="+", default=None,
                        help="folds to use, as nnUNetv2_predict (default: 0 1 2 3 4)")
    parser.add_argument("--missing", nargs="+", default=[])
    parser.add_argument("--allow-missing", nargs="+", default=[])
    parser.add_argument("--allow-untrained-missing", action="store_true",
                        help="let --allow-missing zero-fill channels the model was not trained to drop (a warning "
                             "goes to OUT/" + REPORT_FILE + ")")
    parser.add_argument("--rebuild", nargs="+", default=[], choices=sorted(SOURCES), metavar="CHANNEL",
                        help="rebuild these absent channels by physics from the two other diffusion channels "
                             "(DWI = B0 * exp(-b * ADC)) instead of zero-filling them: B0, ADC or DWI")
    parser.add_argument("--b-value", type=float, default=None,
                        help=f"b of the DWI in s/mm2 for --rebuild (default: the DWI's BIDS sidecar JSON where it "
                             f"states one, else {DEFAULT_B_VALUE:g})")
    parser.add_argument("--adc-unit", choices=sorted(ADC_UNITS), default=None,
                        help="unit of the ADC images for --rebuild (default: detected from the tissue median)")
    add_shadowed_options(parser)
    return parser


@dataclass
class StagedRequest:
    """A checked request: the settings that decide the predictions, the model's dataset.json and the channels it
    was trained to drop, and the input folder staged with its absent channels filled (under staging_root)."""
    settings: Dict
    dataset_json: Dict
    droppable: List[str]
    staging_root: str
    prepared: PreparedInput


def _stage(args: argparse.Namespace, folds: List[str], passthrough: List[str]) -> StagedRequest:
    """Check the input, output and model, then stage the input; nothing is left behind on an error."""
    if not os.path.isdir(args.input):
        raise ValueError(f"input folder {args.input} does not exist")
    if _same_folder(args.input, args.output):
        raise ValueError(f"the output folder {args.output} is the input folder; predictions and nnU-Net's files "
                         f"would be mixed into the images (the input is never written to)")
    folder = model_folder(args.dataset, args.trainer, args.plans, args.configuration)
    dataset_json = model_dataset_json(args.dataset, args.trainer, args.plans, args.configuration)
    channel_names = channel_names_from_dataset_json(dataset_json)
    check_folds(folder, folds, args.chk or "checkpoint_final.pth")
    droppable = trained_droppable_channels(folder, folds, channel_names)
    settings = {"dataset": args.dataset, "configuration": args.configuration, "trainer": args.trainer,
                "plans": args.plans, "folds": folds, "checkpoint": args.chk or "checkpoint_final.pth",
                "missing": sorted(args.missing), "allow_missing": sorted(args.allow_missing),
                "allow_untrained_missing": args.allow_untrained_missing, "rebuild": sorted(args.rebuild),
                "b_value": args.b_value, "adc_unit": args.adc_unit,
                "nnunet_options": prediction_defining_options(passthrough)}
    check_output_folder(args.output, settings)
    staging_root = make_private_folder(tempfile.gettempdir(), STAGING_PREFIX)
    try:
        prepared = prepare_input_with_missing_channels(
            args.input, os.path.join(staging_root, "input"), channel_names, dataset_json["file_ending"],
            missing=args.missing, allow_missing=args.allow_missing, droppable=droppable,
            allow_untrained=args.allow_untrained_missing,
            rebuild_settings=RebuildSettings(tuple(args.rebuild), args.b_value, args.adc_unit),
            image_dimension=model_image_dimension(folder))
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise
    return StagedRequest(settings, dataset_json, droppable, staging_root, prepared)


def _predict(args: argparse.Namespace, argv: List[str], passthrough: List[str], folds: List[str],
             staged: StagedRequest, output_existed: bool) -> int:
    """nnUNetv2_predict on the staged input, with OUT/<REPORT_FILE> written first (complete: false) and completed
    only once every prediction reads back whole; a failed nnUNetv2_predict leaves no output folder it created."""
    prepared = staged.prepared
    filled = sum(len(v) for v in prepared.zero_filled.values())
    rebuilt = sum(len(v) for v in prepared.rebuilt.values())
    print(f"nnunet_ext_predict: {len(prepared.cases)} cases, {filled} absent channel image(s) zero-filled "
          f"({', '.join(args.missing) or 'none forced'})"
          + (f", {rebuilt} rebuilt by physics ({', '.join(args.rebuild)})" if args.rebuild else ""), flush=True)
    for warning in prepared.warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    command = ["nnUNetv2_predict", "-i", os.path.join(staged.staging_root, "input"), "-o", args.output,
               "-d", args.dataset, "-c", args.configuration, "-tr", args.trainer, "-p", args.plans, *passthrough]
    report = {"settings": staged.settings, "cases": prepared.cases, "zero_filled": prepared.zero_filled,
              "rebuilt": prepared.rebuilt, "missing": list(args.missing), "allow_missing": list(args.allow_missing),
              "trained_to_drop": staged.droppable, "folds": folds, "warnings": prepared.warnings,
              "provenance": provenance(command=shlex.join(["nnunet_ext_predict", *argv]))}
    report_path = os.path.join(args.output, REPORT_FILE)
    # written before nnU-Net writes anything: a killed run leaves predictions that their report describes
    os.makedirs(args.output, exist_ok=True)
    write_json_files({report_path: {**report, "complete": False}})
    returncode = subprocess.run(command, env=nnunet_environment()).returncode
    if returncode != 0:
        if not output_existed:
            shutil.rmtree(args.output, ignore_errors=True)
        return returncode
    problems = unreadable_predictions(args.output, prepared.cases, staged.dataset_json["file_ending"])
    if problems:  # nnU-Net writes through SimpleITK, which does not raise when the disk fills up
        print("error: nnUNetv2_predict finished, but these predictions are not whole (disk full?); the report says "
              "the run is incomplete:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    write_json_files({report_path: {**report, "complete": True}})
    return 0


def run(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, passthrough = _parser().parse_known_args(argv)
    passthrough += shadowed_passthrough(args)
    folds = [str(f) for f in (args.folds or DEFAULT_FOLDS)]
    if args.folds:
        passthrough += ["-f", *folds]
    try:
        staged = _stage(args, folds, passthrough)
    except (ValueError, FileExistsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    output_existed = os.path.exists(args.output)
    try:
        return _predict(args, argv, passthrough, folds, staged, output_existed)
    except Terminated:
        if not output_existed and set(os.listdir(args.output)) <= {REPORT_FILE}:
            shutil.rmtree(args.output, ignore_errors=True)  # nothing predicted yet: no folder left behind
        raise
    except OSError as error:  # e.g. the disk is full: the report could not be written
        if not output_existed:
            shutil.rmtree(args.output, ignore_errors=True)
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(staged.staging_root, ignore_errors=True)


def main() -> None:
    signal.signal(signal.SIGTERM, _raise_terminated)
    sys.exit(run())


if __name__ == "__main__":
    main()
