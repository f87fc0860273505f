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
from typing import Dict, List, Optional, Sequence

import SimpleITK as sitk

from nnunet_ext.data.nifti import ImageFileError, geometry_mismatch, read_image_checked

_MAX_REPORTED = 20


@dataclass
class PreparedInput:
    cases: List[str]
    zero_filled: Dict[str, List[str]] = field(default_factory=dict)  # case -> channel names written as zeros
    warnings: List[str] = field(default_factory=list)  # zero-filled channels the model was not trained to drop


def _case_files(input_folder: str, num_channels: int, file_ending: str) -> Dict[str, Dict[int, str]]:
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}$")
    cases: Dict[str, Dict[int, str]] = {}
    problems = []
    for name in sorted(os.listdir(input_folder)):
        if not name.endswith(file_ending):
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
                                        allow_untrained: bool = False) -> PreparedInput:
    """Check `input_folder` and write a complete input folder to `output_folder` (which must not exist).

    missing: channels treated as absent in every case (their files, if any, are ignored).
    allow_missing: channels that may lack a file in some cases. Any other absent file is an error.
    droppable: the channels the model was trained to do without (None: not checked). A model has never seen
      a zero image in another channel, so `allow_missing` may name another only with `allow_untrained`; such
      channels, and those of `missing` (an explicit what-if, e.g. a baseline without dropout), are listed in
      the result's warnings.
    """
    channel_names = list(channel_names)
    _check_names(missing, channel_names, "--missing")
    _check_names(allow_missing, channel_names, "--allow-missing")
    untrained = [] if droppable is None else [n for n in allow_missing if n not in droppable]
    if untrained and not allow_untrained:
        raise ValueError(f"--allow-missing {', '.join(untrained)}: the model was not trained to drop "
                         f"{', '.join(untrained)} (it was trained to drop: {', '.join(droppable) or 'no channel'}), "
                         f"so a zero image there gives a wrong segmentation without any error; pass "
                         f"--allow-untrained-missing to zero-fill it anyway")
    if len(set(missing)) == len(channel_names):
        raise ValueError(f"--missing lists every channel ({', '.join(channel_names)}); nothing is left to predict from")
    if os.path.exists(output_folder):
        raise FileExistsError(f"{output_folder} exists")

    cases = _case_files(input_folder, len(channel_names), file_ending)
    forced_absent = {channel_names.index(n) for n in missing}
    may_be_absent = forced_absent | {channel_names.index(n) for n in allow_missing}
    problems: List[str] = []
    plan: Dict[str, Dict[int, str]] = {}
    for case, files in cases.items():
        present = {c: p for c, p in files.items() if c not in forced_absent}
        not_allowed = [channel_names[c] for c in range(len(channel_names))
                       if c not in present and c not in may_be_absent]
        if not_allowed:
            problems.append(f"{case}: missing file for {', '.join(not_allowed)} (allow it with --allow-missing "
                            f"or --missing)")
            continue
        if not present:
            problems.append(f"{case}: no channel left")
            continue
        reference, reference_channel = None, None
        for channel in sorted(present):
            label = f"{case} {channel_names[channel]}"
            try:
                image = read_image_checked(present[channel])
            except ImageFileError as error:  # truncated, unreadable, NaN or Inf (NIfTI included)
                problems.append(f"{label}: {error}")
                continue
            if reference is None:
                reference, reference_channel = image, channel
            else:
                problem = geometry_mismatch(reference, image)
                if problem:
                    problems.append(f"{label}: {problem} ({channel_names[reference_channel]}'s)")
        plan[case] = present
    if problems:
        shown = "\n  ".join(problems[:_MAX_REPORTED])
        more = f"\n  ... and {len(problems) - _MAX_REPORTED} more" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(f"cannot predict from {input_folder}:\n  {shown}{more}")

    result = PreparedInput(cases=sorted(plan))
    os.makedirs(output_folder)
    try:
        for case, present in plan.items():
            reference = sitk.ReadImage(present[min(present)])  # checked whole above
            for channel in range(len(channel_names)):
                target = os.path.join(output_folder, f"{case}_{channel:04d}{file_ending}")
                if channel in present:
                    shutil.copyfile(present[channel], target)
                    continue
                zeros = sitk.Image(reference.GetSize(), sitk.sitkFloat32)
                zeros.CopyInformation(reference)
                sitk.WriteImage(zeros, target, useCompression=True)
                result.zero_filled.setdefault(case, []).append(channel_names[channel])
    except BaseException:
        shutil.rmtree(output_folder, ignore_errors=True)
        raise
    if droppable is not None:
        filled = {name for names in result.zero_filled.values() for name in names}
        for name in [n for n in channel_names if n in filled and n not in droppable]:
            cases = sorted(case for case, names in result.zero_filled.items() if name in names)
            result.warnings.append(f"{name} zero-filled in {len(cases)} case(s) ({', '.join(cases[:5])}"
                                   f"{', ...' if len(cases) > 5 else ''}) but the model was not trained to drop it "
                                   f"(trained to drop: {', '.join(droppable) or 'no channel'}): expect a worse "
                                   f"segmentation")
    return result
