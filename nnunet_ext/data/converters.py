"""Convert public stroke MRI datasets (ISLES'22, JHU-style) into nnU-Net raw datasets, atomically.

Output: `nnUNet_raw/Dataset<ID>_<Name>/` with imagesTr (`CASE_0000.nii.gz`, ...), labelsTr (`CASE.nii.gz`,
uint8, mask > 0 -> 1), dataset.json (nnU-Net's `generate_dataset_json`: channel_names, labels
{background: 0, lesion: 1}, numTraining, file_ending, plus our `droppable_channels`), case_centers.json
(case -> center) and conversion_report.json (converted cases, skipped cases with the reason, settings,
provenance). Everything is written to a hidden sibling folder and renamed into place at the end, so an
interrupted or failed conversion leaves nothing half-written. Cases that cannot be used are skipped and
reported, never silently dropped; if none is left, the conversion fails and writes nothing.
All channels and the label of a case must share one grid (nnU-Net needs that): size, spacing, origin and
direction are checked, and the written files carry the first channel's geometry exactly.
Every source file is read whole and checked finite (`nifti.read_image_checked`): a truncated file or one with
NaN/Inf voxels skips its case with the file named, instead of converting the zeros SimpleITK would read.

ISLES'22 (BIDS, as distributed on Zenodo; `root` is the `ISLES-2022` folder or the folder holding it):
    sub-strokecaseXXXX/ses-0001/dwi/sub-strokecaseXXXX_ses-0001_dwi.nii.gz
    sub-strokecaseXXXX/ses-0001/dwi/sub-strokecaseXXXX_ses-0001_adc.nii.gz
    sub-strokecaseXXXX/ses-0001/anat/sub-strokecaseXXXX_ses-0001_FLAIR.nii.gz
    derivatives/sub-strokecaseXXXX/ses-0001/sub-strokecaseXXXX_ses-0001_msk.nii.gz
  File names are matched case-insensitively (copies of the data spell FLAIR as `flair`). The mask is on the
  DWI/ADC grid; FLAIR has its own grid. By default the dataset has DWI and ADC (channel names DWI, ADC).
  With `with_flair=True`, FLAIR becomes a third channel, resampled onto the DWI grid with SimpleITK (linear
  interpolation, 0 outside) through the images' world coordinates: no registration is done, so this is only
  right if FLAIR and DWI share the scanner's frame (they do in ISLES'22: one session, untouched headers).
  Case identifiers drop the `sub-` prefix (`strokecase0001`); subjects with several sessions get
  `strokecase0001_ses-0002`. Center: "ISLES" for every case (the release does not say which case is from
  which of its three centers). With `rebuild_b0=True` (`--rebuild-b0`) a B0 channel rebuilt from DWI and ADC
  (B0 = DWI · exp(b · ADC)) comes third: DWI, ADC, B0[, FLAIR], as a DWI + ADC + B0 dataset of another center.

JHU-style (assumed: one folder per subject, no public layout is fixed; every pattern is configurable):
    ROOT/<subject>/<subject>_DWI.nii.gz, <subject>_ADC.nii.gz, <subject>_B0.nii.gz (optional),
    ROOT/<subject>/<subject>_mask.nii.gz
  Channels DWI, ADC, B0. A missing B0 becomes a zero image on the DWI grid (how the paper treats centers
  without B0), or the case is skipped with `missing_b0="skip"`. Center "JHU", or per subject from a map.
"""
import os
import re
import string
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import save_json
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_ext.data.diffusion import b_value_for, rebuild, record_as_json
from nnunet_ext.data.nifti import ImageFileError, geometry_mismatch, read_image_checked, write_image_verified
from nnunet_ext.data.staging import check_dataset_id_free, staged_dataset_folder
from nnunet_ext.provenance import provenance

LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".nii.gz"


class SkipCase(Exception):
    """A source case that cannot be converted; the message says why."""


@dataclass(frozen=True)
class SourceCase:
    case: str                              # nnU-Net case identifier
    center: str
    channels: Dict[str, Optional[str]]     # channel name -> file (None: not found)
    mask: Optional[str]
    expected: Dict[str, str] = field(default_factory=dict)  # what was looked for, for skip messages


@dataclass
class ConversionReport:
    dataset_folder: str
    converted: List[str]
    skipped: List[Dict[str, str]]          # {"case": ..., "reason": ...}


def _find_file(folder: str, name: str) -> Optional[str]:
    """`folder/name`, else the one file in `folder` whose name matches `name` ignoring case."""
    exact = os.path.join(folder, name)
    if os.path.isfile(exact):
        return exact
    if not os.path.isdir(folder):
        return None
    matches = [f for f in os.listdir(folder) if f.lower() == name.lower()]
    return os.path.join(folder, matches[0]) if len(matches) == 1 else None


def _read(path: Optional[str], what: str, expected: str) -> sitk.Image:
    if path is None:
        raise SkipCase(f"missing {what} (expected {expected})")
    try:
        image = read_image_checked(path)
    except ImageFileError as error:  # truncated (.nii.gz or .nii), unreadable, NaN or Inf voxels
        raise SkipCase(f"unusable {what}: {error}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise SkipCase(f"{what} is not a 3D scalar image (dimension {image.GetDimension()}, "
                       f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel)")
    return image


def _binary_mask(mask: sitk.Image, grid: sitk.Image) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(mask)  # finite: checked by _read
    binary = sitk.GetImageFromArray((array > 0).astype(np.uint8))
    binary.CopyInformation(grid)
    return binary


def load_case(source: SourceCase, channel_order: Sequence[str], resample: Sequence[str] = (),
              zero_if_missing: Sequence[str] = ()) -> Tuple[List[sitk.Image], sitk.Image]:
    """Images in `channel_order` on the first channel's grid and the binarised mask; SkipCase if unusable.

    Channels in `resample` are resampled onto that grid; channels in `zero_if_missing` become zero images
    when their file is absent; every other channel and the mask must already be on the grid."""
    def expected(name):
        return source.expected.get(name, name)

    reference_name = channel_order[0]
    grid = _read(source.channels.get(reference_name), reference_name, expected(reference_name))
    images = [grid]
    for name in channel_order[1:]:
        path = source.channels.get(name)
        if path is None and name in zero_if_missing:
            zero = sitk.Image(grid.GetSize(), sitk.sitkFloat32)
            zero.CopyInformation(grid)
            images.append(zero)
            continue
        image = _read(path, name, expected(name))
        if name in resample:
            image = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            if not sitk.GetArrayViewFromImage(image).any():
                raise SkipCase(f"{name} does not overlap the {reference_name} grid after resampling")
        else:
            mismatch = geometry_mismatch(grid, image)
            if mismatch:
                raise SkipCase(f"{name} grid differs from {reference_name}: {mismatch}")
            image.CopyInformation(grid)  # equal within tolerance; make it exact for nnU-Net
        images.append(image)
    mask = _read(source.mask, "mask", expected("mask"))
    mismatch = geometry_mismatch(grid, mask)
    if mismatch:
        raise SkipCase(f"mask grid differs from {reference_name}: {mismatch}")
    return images, _binary_mask(mask, grid)


# a case id becomes file names (<case>_0000.nii.gz): letters, digits, '_', '-', '.', not starting with '.' or '-'
SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _origin(source: SourceCase) -> str:
    """Where a case comes from, for messages: the folder of its first expected file."""
    first = next((p for p in source.expected.values() if p), None) if source.expected else None
    return os.path.dirname(first) if first else source.case


def check_case_ids(sources: Sequence[SourceCase]) -> None:
    """Refuse two sources that map to one case id (the second would overwrite the first's images and label) and ids
    that are no safe file name (a subject folder 'sub-..' gave the hidden files '.._0000.nii.gz')."""
    seen: Dict[str, SourceCase] = {}
    for source in sources:
        if not SAFE_CASE_ID.match(source.case) or ".." in source.case:
            raise ValueError(f"case id {source.case!r} (from {_origin(source)}) is not a safe file name: letters, "
                             f"digits, '_', '-' and '.', starting with a letter or digit")
        if source.case in seen:
            raise ValueError(f"two sources map to case id {source.case!r}: {_origin(seen[source.case])} and "
                             f"{_origin(source)}; rename one of them")
        seen[source.case] = source


def _folder_name(dataset_id: int, name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be in 1..999 (nnU-Net uses three digits), got {dataset_id}")
    if not name or not all(c.isalnum() or c in "-" for c in name):
        raise ValueError(f"dataset name must be letters, digits or '-' (nnU-Net splits on '_'), got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def write_raw_dataset(sources: Sequence[SourceCase], raw_root: str, dataset_id: int, name: str,
                      channel_order: Sequence[str],
                      prepare: Callable[[SourceCase], Tuple[List[sitk.Image], sitk.Image]],
                      settings: Mapping, droppable_channels: Sequence[str] = ("ADC",), overwrite: bool = False,
                      skipped: Sequence[Dict[str, str]] = (),
                      progress: Optional[Callable[[Iterable, int], Iterable]] = None,
                      command: Optional[str] = None) -> ConversionReport:
    """Convert `sources` with `prepare` into `raw_root/Dataset<ID>_<Name>` atomically (see module docstring)."""
    folder_name = _folder_name(dataset_id, name)
    unknown = [c for c in droppable_channels if c not in channel_order]
    if unknown:
        raise ValueError(f"droppable channel {unknown[0]!r} is not a channel of this dataset "
                         f"({', '.join(channel_order)})")
    final = os.path.join(raw_root, folder_name)
    check_case_ids(sources)
    check_dataset_id_free(raw_root, folder_name)  # before any case is read (staged_dataset_folder checks again)
    skipped = list(skipped)
    converted, centers = [], {}
    with staged_dataset_folder(raw_root, folder_name, overwrite) as staging:
        for sub in ("imagesTr", "labelsTr"):
            os.makedirs(os.path.join(staging, sub))
        wrap = progress or (lambda iterable, total: iterable)
        for source in wrap(sources, len(sources)):
            try:
                images, mask = prepare(source)
            except SkipCase as reason:
                skipped.append({"case": source.case, "reason": str(reason)})
                continue
            # read back before the dataset is published: SimpleITK does not raise when the disk fills
            for c, image in enumerate(images):
                write_image_verified(image, os.path.join(staging, "imagesTr", f"{source.case}_{c:04d}{FILE_ENDING}"))
            write_image_verified(mask, os.path.join(staging, "labelsTr", source.case + FILE_ENDING))
            converted.append(source.case)
            centers[source.case] = source.center
        if not converted:
            reasons = "; ".join(f"{s['case']}: {s['reason']}" for s in skipped[:5])
            raise ValueError(f"no case could be converted ({len(skipped)} skipped: {reasons})")
        generate_dataset_json(staging, {i: c for i, c in enumerate(channel_order)}, dict(LABELS), len(converted),
                              FILE_ENDING, dataset_name=folder_name, droppable_channels=list(droppable_channels),
                              license="see the source dataset's licence", converted_by="nnunet_ext_convert",
                              description=settings.get("description"))
        save_json(centers, os.path.join(staging, "case_centers.json"))
        save_json({"converted": converted, "skipped": skipped, "settings": dict(settings),
                   "provenance": provenance(command=command)}, os.path.join(staging, "conversion_report.json"),
                  sort_keys=False)
    return ConversionReport(final, converted, skipped)


# ---------------------------------------------------------------------------------------------- ISLES'22

def isles22_root(root: str) -> str:
    """The ISLES-2022 folder: `root` itself, or `root/ISLES-2022`."""
    for candidate in (root, os.path.join(root, "ISLES-2022")):
        if os.path.isdir(candidate) and any(d.startswith("sub-") for d in os.listdir(candidate)):
            return candidate
    raise ValueError(f"{root} does not look like ISLES'22: no sub-* folders in it or in {root}/ISLES-2022")


def find_isles22_cases(root: str) -> Tuple[List[SourceCase], List[Dict[str, str]]]:
    """(cases found with their files, skipped entries) for the ISLES'22 BIDS layout."""
    root = isles22_root(root)
    derivatives = os.path.join(root, "derivatives")
    subjects = sorted(d for d in os.listdir(root) if d.startswith("sub-") and os.path.isdir(os.path.join(root, d)))
    cases, skipped = [], []
    if os.path.isdir(derivatives):
        orphans = sorted(set(d for d in os.listdir(derivatives) if d.startswith("sub-")) - set(subjects))
        skipped += [{"case": d[len("sub-"):], "reason": "mask in derivatives but no image folder"} for d in orphans]
    for subject in subjects:
        sessions = sorted(s for s in os.listdir(os.path.join(root, subject))
                          if s.startswith("ses-") and os.path.isdir(os.path.join(root, subject, s)))
        label = subject[len("sub-"):]
        if not sessions:
            skipped.append({"case": label, "reason": f"no ses-* folder in {os.path.join(root, subject)}"})
        for session in sessions:
            case = label if len(sessions) == 1 else f"{label}_{session}"
            stem = f"{subject}_{session}"
            here = os.path.join(root, subject, session)
            expected = {"DWI": os.path.join(here, "dwi", f"{stem}_dwi.nii.gz"),
                        "ADC": os.path.join(here, "dwi", f"{stem}_adc.nii.gz"),
                        "FLAIR": os.path.join(here, "anat", f"{stem}_FLAIR.nii.gz"),
                        "mask": os.path.join(derivatives, subject, session, f"{stem}_msk.nii.gz")}
            found = {k: _find_file(os.path.dirname(p), os.path.basename(p)) for k, p in expected.items()}
            cases.append(SourceCase(case, "ISLES", {k: found[k] for k in ("DWI", "ADC", "FLAIR")}, found["mask"],
                                    expected))
    return cases, skipped


def convert_isles22(root: str, raw_root: str, dataset_id: int, name: str = "ISLES22", with_flair: bool = False,
                    droppable_channels: Sequence[str] = ("ADC",), overwrite: bool = False,
                    progress: Optional[Callable[[Iterable, int], Iterable]] = None,
                    command: Optional[str] = None, rebuild_b0: bool = False, b_value: Optional[float] = None,
                    adc_unit: Optional[str] = None) -> ConversionReport:
    """rebuild_b0: add a B0 channel (third, before FLAIR) rebuilt from DWI and ADC (B0 = DWI · exp(b · ADC),
    nnunet_ext.data.diffusion; b from `b_value`, else the DWI's sidecar, else 1000), so that the dataset matches a
    DWI + ADC + B0 dataset of another center. How each case's B0 was made is in conversion_report.json."""
    read = ("DWI", "ADC", "FLAIR") if with_flair else ("DWI", "ADC")
    channels = ("DWI", "ADC", "B0") + read[2:] if rebuild_b0 else read
    if b_value is not None and not b_value > 0:
        raise ValueError(f"--b-value must be a positive number of s/mm2, got {b_value}")
    cases, skipped = find_isles22_cases(root)
    if not cases:
        raise ValueError(f"no ISLES'22 subject/session folders under {root}")
    rebuilt: Dict[str, Dict] = {}
    settings = {"source": os.path.abspath(root), "layout": "ISLES'22 BIDS", "channels": list(channels),
                "with_flair": with_flair, "rebuild_b0": rebuild_b0,
                "description": "ISLES'22 converted by nnunet_ext_convert"
                               + (" (FLAIR resampled onto the DWI grid)" if with_flair else " (DWI, ADC)")
                               + (" with B0 rebuilt from DWI and ADC" if rebuild_b0 else "")}
    if rebuild_b0:
        settings["b0_rebuilt"] = rebuilt  # filled case by case below, saved with the report

    def prepare(source: SourceCase) -> Tuple[List[sitk.Image], sitk.Image]:
        images, mask = load_case(source, read, resample=("FLAIR",) if with_flair else ())
        if not rebuild_b0:
            return images, mask
        b0, record = _rebuilt_b0(source, images[0], images[1], b_value, adc_unit)
        rebuilt[source.case] = record
        return images[:2] + [b0] + images[2:], mask

    return write_raw_dataset(cases, raw_root, dataset_id, name, channels, prepare, settings, droppable_channels,
                             overwrite, skipped, progress, command)


def _rebuilt_b0(source: SourceCase, dwi: sitk.Image, adc: sitk.Image, b_value: Optional[float],
                adc_unit: Optional[str]) -> Tuple[sitk.Image, Dict]:
    b_value, b_from = b_value_for(source.channels["DWI"], b_value)
    try:
        array, record = rebuild("B0", {"DWI": sitk.GetArrayFromImage(dwi).astype(np.float64),
                                       "ADC": sitk.GetArrayFromImage(adc).astype(np.float64)},
                                b_value, adc_unit, b_value_from=b_from)
    except ValueError as error:
        raise SkipCase(f"B0 cannot be rebuilt: {error}") from None
    b0 = sitk.GetImageFromArray(array)
    b0.CopyInformation(dwi)
    return b0, record_as_json(record)


# ---------------------------------------------------------------------------------------------- JHU-style

@dataclass(frozen=True)
class JhuLayout:
    """File names inside `ROOT/<subject>/`; `{subject}` is replaced by the folder name."""

    dwi: str = "{subject}_DWI.nii.gz"
    adc: str = "{subject}_ADC.nii.gz"
    b0: str = "{subject}_B0.nii.gz"
    mask: str = "{subject}_mask.nii.gz"

    def __post_init__(self):
        for key, pattern in asdict(self).items():
            fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None} \
                if _parses(pattern) else None
            if fields != {"subject"} or "/" in pattern:
                raise ValueError(f"{key} pattern {pattern!r} must contain {{subject}} (and no other {{...}} field) "
                                 f"and name a file in the subject's folder")


def _parses(pattern: str) -> bool:
    try:
        list(string.Formatter().parse(pattern))
        return True
    except ValueError:  # an unmatched '{' or '}'
        return False


MISSING_B0 = ("zero", "skip")


def find_jhu_cases(root: str, layout: JhuLayout = JhuLayout(),
                   subject_centers: Optional[Mapping[str, str]] = None,
                   default_center: str = "JHU") -> Tuple[List[SourceCase], List[Dict[str, str]]]:
    if not os.path.isdir(root):
        raise ValueError(f"JHU root {root} is not a folder")
    subjects = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
    cases, skipped = [], []
    for subject in subjects:
        if subject_centers is not None and subject not in subject_centers:
            skipped.append({"case": subject, "reason": "not in the subject->center map"})
            continue
        expected = {name: os.path.join(root, subject, getattr(layout, key).format(subject=subject))
                    for name, key in (("DWI", "dwi"), ("ADC", "adc"), ("B0", "b0"), ("mask", "mask"))}
        found = {k: p if os.path.isfile(p) else None for k, p in expected.items()}
        center = subject_centers[subject] if subject_centers is not None else default_center
        cases.append(SourceCase(subject, center, {k: found[k] for k in ("DWI", "ADC", "B0")}, found["mask"],
                                expected))
    return cases, skipped


def convert_jhu(root: str, raw_root: str, dataset_id: int, name: str = "JHU", layout: JhuLayout = JhuLayout(),
                missing_b0: str = "zero", subject_centers: Optional[Mapping[str, str]] = None,
                default_center: str = "JHU", droppable_channels: Sequence[str] = ("ADC",), overwrite: bool = False,
                progress: Optional[Callable[[Iterable, int], Iterable]] = None,
                command: Optional[str] = None) -> ConversionReport:
    if missing_b0 not in MISSING_B0:
        raise ValueError(f"missing_b0 must be one of {', '.join(MISSING_B0)}, got {missing_b0!r}")
    channels = ("DWI", "ADC", "B0")
    cases, skipped = find_jhu_cases(root, layout, subject_centers, default_center)
    if not cases and not skipped:
        raise ValueError(f"no subject folders under {root}")
    settings = {"source": os.path.abspath(root), "layout": asdict(layout), "missing_b0": missing_b0,
                "channels": list(channels),
                "description": "JHU-style stroke MRI converted by nnunet_ext_convert (missing B0: "
                               + ("zero image)" if missing_b0 == "zero" else "case skipped)")}
    zero = ("B0",) if missing_b0 == "zero" else ()
    return write_raw_dataset(cases, raw_root, dataset_id, name, channels,
                             lambda s: load_case(s, channels, zero_if_missing=zero),
                             settings, droppable_channels, overwrite, skipped, progress, command)
