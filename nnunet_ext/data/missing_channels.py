"""Prepare an nnU-Net input folder in which some channels are absent, for the stock predictor.

A model trained with modality dropout expects an absent modality as a zero ("black") image. This module
checks an input folder (`CASE_XXXX<file_ending>` files), then writes a complete copy in which every absent
channel is a zero image with the geometry of a present channel of the same case. Everything is checked
before anything is written, so a bad folder leaves nothing behind.
"""
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set

import SimpleITK as sitk

from nnunet_ext.data.diffusion import DEFAULT_FLOOR_FRACTION, SOURCES, b_value_for, rebuild, record_as_json
from nnunet_ext.data.nifti import ImageFileError, geometry_mismatch, read_image_checked, write_image_verified

_MAX_REPORTED = 20


@dataclass
class PreparedInput:
    cases: List[str]
    zero_filled: Dict[str, List[str]] = field(default_factory=dict)  # case -> channel names written as zeros
    warnings: List[str] = field(default_factory=list)  # zero-filled channels the model was not trained to drop
    rebuilt: Dict[str, Dict[str, Dict]] = field(default_factory=dict)  # case -> channel -> how (RebuildRecord)


@dataclass(frozen=True)
class RebuildSettings:
    """How absent diffusion channels are rebuilt (nnunet_ext.data.diffusion): b from `b_value` or, when None, the
    DWI's (or B0's) BIDS sidecar, else the default; the ADC unit detected when None."""
    channels: Sequence[str] = ()
    b_value: Optional[float] = None
    adc_unit: Optional[str] = None
    floor_fraction: float = DEFAULT_FLOOR_FRACTION

    def __post_init__(self):
        if self.b_value is not None and not self.b_value > 0:
            raise ValueError(f"--b-value must be a positive number of s/mm2, got {self.b_value}")


def check_rebuild(rebuild: Sequence[str], channel_names: Sequence[str], missing: Sequence[str] = ()) -> None:
    """A channel can be rebuilt only when the model has it and the two it is made from, and --missing removes
    neither of those."""
    _check_names(rebuild, channel_names, "--rebuild")
    for channel in rebuild:
        if channel not in SOURCES:
            raise ValueError(f"--rebuild {channel}: only {', '.join(SOURCES)} can be rebuilt (from the two others)")
        needed = SOURCES[channel]
        lacking = [n for n in needed if n not in channel_names]
        if lacking:
            raise ValueError(f"--rebuild {channel} needs {' and '.join(needed)}, but the model has no "
                             f"{', '.join(lacking)} (it has {', '.join(channel_names)})")
        removed = [n for n in needed if n in missing]
        if removed:
            raise ValueError(f"--rebuild {channel} needs {' and '.join(needed)}, but --missing removes "
                             f"{', '.join(removed)}")


# endings of image files nnU-Net reads (longest first: '.nii.gz' before '.nii' and '.gz')
IMAGE_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".mhd", ".png", ".tif", ".tiff", ".bmp")


def image_dimension_problem(found: int, expected: Optional[int]) -> Optional[str]:
    if expected is not None and found != expected:
        return f"a {found}D image; the model was trained on {expected}D images"
    if found > 3:
        return f"a {found}D image; nnU-Net predicts 2D and 3D images (one file per channel)"
    return None


def _case_files(input_folder: str, num_channels: int, file_ending: str) -> Dict[str, Dict[int, str]]:
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}$")
    cases: Dict[str, Dict[int, str]] = {}
    problems = []
    for name in sorted(os.listdir(input_folder)):
        if not name.endswith(file_ending):
            other = [e for e in IMAGE_ENDINGS if name.lower().endswith(e)]
            if other and not file_ending.endswith(other[0]):  # e.g. a .nii among .nii.gz: nnU-Net would skip it
                problems.append(f"{name}: ends in {other[0]}, but the model reads {file_ending} files (convert it, "
                                f"or move it out of the folder)")
            continue
        match = pattern.match(name)
        if match is None:
            problems.append(f"{name}: not named CASE_XXXX{file_ending}")
            continue
        channel = int(match["channel"])
        if channel >= num_channels:
            problems.append(f"{name}: channel {channel} but the model has {num_channels} channels")
            continue
        cases.setdefault(match["case"], {})[channel] = os.path.join(input_folder, name)
    if problems:
        raise ValueError(f"bad file names in {input_folder}:\n  " + "\n  ".join(problems[:_MAX_REPORTED]))
    if not cases:
        raise ValueError(f"no *{file_ending} images in {input_folder}")
    return cases


def _check_names(names: Sequence[str], channel_names: Sequence[str], what: str) -> None:
    unknown = [n for n in names if n not in channel_names]
    if unknown:
        raise ValueError(f"{what}: unknown modality {unknown[0]!r}; the model has {', '.join(channel_names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: {', '.join(sorted({n for n in names if list(names).count(n) > 1}))} listed twice")


def prepare_input_with_missing_channels(input_folder: str, output_folder: str, channel_names: Sequence[str],
                                        file_ending: str, missing: Sequence[str] = (),
                                        allow_missing: Sequence[str] = (),
                                        droppable: Optional[Sequence[str]] = None,
                                        allow_untrained: bool = False,
                                        rebuild_settings: RebuildSettings = RebuildSettings(),
                                        image_dimension: Optional[int] = 3) -> PreparedInput:
    """Check `input_folder` and write a complete input folder to `output_folder` (which must not exist).

    missing: channels treated as absent in every case (their files, if any, are ignored).
    allow_missing: channels that may lack a file in some cases. Any other absent file is an error.
    droppable: the channels the model was trained to do without (None: not checked). A model has never seen
      a zero image in another channel, so `allow_missing` may name another only with `allow_untrained`; such
      channels, and those of `missing` (an explicit what-if, e.g. a baseline without dropout), are listed in
      the result's warnings.
    rebuild_settings.channels: channels that, where absent (no file, or in `missing`), are rebuilt by physics from
      the two other diffusion channels of the case (nnunet_ext.data.diffusion) instead of zero-filled.
    image_dimension: what the model was trained on (3: volumes; None: not known, only 4D and more is refused); a
      2D image given to a volume model is refused (nnU-Net would predict it as a single slice), and so is a 4D one
      (nnU-Net fails on it deep inside its workers).
    """
    channel_names = list(channel_names)
    _check_request(channel_names, missing, allow_missing, droppable, allow_untrained, rebuild_settings)
    if os.path.exists(output_folder):
        raise FileExistsError(f"{output_folder} exists")
    rebuilt_channels = {channel_names.index(n) for n in rebuild_settings.channels}
    forced_absent = {channel_names.index(n) for n in missing}
    may_be_absent = forced_absent | {channel_names.index(n) for n in allow_missing} | rebuilt_channels
    problems: List[str] = []
    plan: Dict[str, Dict[int, str]] = {}
    for case, files in _case_files(input_folder, len(channel_names), file_ending).items():
        present = {c: p for c, p in files.items() if c not in forced_absent}
        problems += _case_problems(case, present, channel_names, may_be_absent, rebuilt_channels, image_dimension)
        plan[case] = present  # written only if no case has a problem
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(f"cannot predict from {input_folder}:\n  {shown}{more}")
    result = PreparedInput(cases=sorted(plan))
    os.makedirs(output_folder)
    try:
        for case, present in plan.items():
            _write_case(case, present, output_folder, channel_names, file_ending, rebuilt_channels, rebuild_settings,
                        result)
    except BaseException:
        shutil.rmtree(output_folder, ignore_errors=True)
        raise
    if droppable is not None:
        result.warnings += _untrained_warnings(result.zero_filled, channel_names, droppable)
    return result


def _check_request(channel_names: List[str], missing: Sequence[str], allow_missing: Sequence[str],
                   droppable: Optional[Sequence[str]], allow_untrained: bool, rebuild_settings: RebuildSettings
                   ) -> None:
    """The options alone: known channel names, no channel the model never learned to miss unless allowed, and
    something left to predict from."""
    _check_names(missing, channel_names, "--missing")
    _check_names(allow_missing, channel_names, "--allow-missing")
    check_rebuild(rebuild_settings.channels, channel_names, missing)
    untrained = [] if droppable is None else [n for n in allow_missing if n not in droppable]
    if untrained and not allow_untrained:
        raise ValueError(f"--allow-missing {', '.join(untrained)}: the model was not trained to drop "
                         f"{', '.join(untrained)} (it was trained to drop: {', '.join(droppable) or 'no channel'}), "
                         f"so a zero image there gives a wrong segmentation without any error; pass "
                         f"--allow-untrained-missing to zero-fill it anyway")
    if len(set(missing)) == len(channel_names):
        raise ValueError(f"--missing lists every channel ({', '.join(channel_names)}); nothing is left to predict from")


def _case_problems(case: str, present: Dict[int, str], channel_names: List[str], may_be_absent: Set[int],
                   rebuilt_channels: Set[int], image_dimension: Optional[int]) -> List[str]:
    """What is wrong with one case's files: an absent channel that may not be, nothing left, a channel that cannot
    be rebuilt, an unreadable or non-finite image, a wrong dimension, geometry that differs between channels."""
    not_allowed = [channel_names[c] for c in range(len(channel_names)) if c not in present and c not in may_be_absent]
    if not_allowed:
        return [f"{case}: missing file for {', '.join(not_allowed)} (allow it with --allow-missing or --missing)"]
    if not present:
        return [f"{case}: no channel left"]
    problems = []
    for channel in sorted(rebuilt_channels - set(present)):
        lacking = [n for n in SOURCES[channel_names[channel]] if channel_names.index(n) not in present]
        if lacking:
            problems.append(f"{case}: cannot rebuild {channel_names[channel]}: {', '.join(lacking)} absent")
    reference, reference_channel = None, None
    for channel in sorted(present):
        label = f"{case} {channel_names[channel]}"
        try:
            image = read_image_checked(present[channel])
        except ImageFileError as error:  # truncated, unreadable, NaN or Inf (NIfTI included)
            problems.append(f"{label}: {error}")
            continue
        dimension_problem = image_dimension_problem(image.GetDimension(), image_dimension) or (
            f"{image.GetNumberOfComponentsPerPixel()} values per voxel (a vector image); nnU-Net reads one "
            f"channel per file" if image.GetNumberOfComponentsPerPixel() > 1 else None)
        if dimension_problem:
            problems.append(f"{label}: {dimension_problem}")
        elif reference is None:
            reference, reference_channel = image, channel
        else:
            problem = geometry_mismatch(reference, image)
            if problem:
                problems.append(f"{label}: {problem} ({channel_names[reference_channel]}'s)")
    return problems


def _write_case(case: str, present: Dict[int, str], output_folder: str, channel_names: List[str], file_ending: str,
                rebuilt_channels: Set[int], rebuild_settings: RebuildSettings, result: PreparedInput) -> None:
    """Every channel file of one case: copied where present, else rebuilt by physics or zero-filled on the
    geometry of the case's first present channel (recorded in `result`)."""
    reference = sitk.ReadImage(present[min(present)])  # checked whole before
    for channel in range(len(channel_names)):
        target = os.path.join(output_folder, f"{case}_{channel:04d}{file_ending}")
        if channel in present:
            shutil.copyfile(present[channel], target)
        elif channel in rebuilt_channels:
            image, record = _rebuild_case_channel(channel_names[channel], present, channel_names, rebuild_settings)
            image.CopyInformation(reference)
            write_image_verified(image, target)
            result.rebuilt.setdefault(case, {})[channel_names[channel]] = record
        else:
            zeros = sitk.Image(reference.GetSize(), sitk.sitkFloat32)
            zeros.CopyInformation(reference)
            write_image_verified(zeros, target)
            result.zero_filled.setdefault(case, []).append(channel_names[channel])


def _untrained_warnings(zero_filled: Dict[str, List[str]], channel_names: List[str],
                        droppable: Sequence[str]) -> List[str]:
    """One warning per channel zero-filled although the model was not trained to drop it."""
    filled = {name for names in zero_filled.values() for name in names}
    warnings = []
    for name in [n for n in channel_names if n in filled and n not in droppable]:
        cases = sorted(case for case, names in zero_filled.items() if name in names)
        warnings.append(f"{name} zero-filled in {len(cases)} case(s) ({', '.join(cases[:5])}"
                        f"{', ...' if len(cases) > 5 else ''}) but the model was not trained to drop it "
                        f"(trained to drop: {', '.join(droppable) or 'no channel'}): expect a worse segmentation")
    return warnings


def _rebuild_case_channel(channel: str, present: Dict[int, str], channel_names: Sequence[str],
                          settings: RebuildSettings):
    """(SimpleITK image, record) of `channel` rebuilt from the case's two other diffusion images (checked whole,
    finite and on one grid before)."""
    sources = {name: present[channel_names.index(name)] for name in SOURCES[channel]}
    arrays = {name: sitk.GetArrayFromImage(sitk.ReadImage(path, sitk.sitkFloat64)) for name, path in sources.items()}
    b_value, b_from = b_value_for(sources[SOURCES[channel][0]], settings.b_value)
    try:
        array, record = rebuild(channel, arrays, b_value, settings.adc_unit, settings.floor_fraction, b_from)
    except ValueError as error:
        raise ValueError(f"{os.path.basename(sources[SOURCES[channel][0]])}: {error}") from None
    return sitk.GetImageFromArray(array), record_as_json(record)
