"""Rebuild a missing diffusion channel from the other two: DWI = B0 · exp(−b · ADC).

A scanner computes the ADC map from the b0 image (B0) and the diffusion-weighted trace image (DWI, b ≈ 1000 s/mm²)
of one acquisition, so when one of the three is missing the other two determine it:
    B0  = DWI · exp(b · ADC)
    ADC = ln(B0 / DWI) / b
    DWI = B0 · exp(−b · ADC)
with ADC in mm²/s and b in s/mm². Assumptions: the three images come from one acquisition (same grid, no motion
between them, the scanner's own ADC fit from these two b-values), b is known, and the ADC unit is known or
detectable. Do not use it across acquisitions (a B0 of another series, an ADC fitted from more b-values with a
different b-range, a DWI with another TE), or on a DWI that is not the trace image.

Noise floor: where the DWI (or B0) signal sits at the background noise it carries no information about diffusion,
and ln() or exp(b · ADC) turn that noise into arbitrary values. So:
  * signals are raised to the floor before they enter ln() or a ratio (max(signal, floor)); the floor is
    `floor_fraction` (default 2 %) of the image's 99th percentile of positive voxels;
  * ADC is clipped to [0, ADC_MAX_MM2S] (free water at body temperature is about 3.0e-3 mm²/s: beyond that is
    noise) before exp();
  * background, where the scanner left ADC at 0 (or B0 below its floor), is not extrapolated: a rebuilt B0 keeps
    the DWI value there, a rebuilt ADC is 0.
Every output is finite (checked).
"""
import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

DIFFUSION_CHANNELS = ("DWI", "ADC", "B0")
# the two channels each rebuild needs
SOURCES: Dict[str, Tuple[str, str]] = {"B0": ("DWI", "ADC"), "ADC": ("DWI", "B0"), "DWI": ("B0", "ADC")}
# ADC units and their factor to mm²/s
ADC_UNITS: Dict[str, float] = {"mm2/s": 1.0, "1e-3 mm2/s": 1e-3, "1e-6 mm2/s": 1e-6}
# a brain's tissue median ADC lies well inside this range (parenchyma about 0.7-0.9e-3 mm²/s; CSF and
# lesions pull it within 0.3-2e-3); the units' ranges do not overlap, so the median names the unit
TISSUE_MEDIAN_RANGE_MM2S = (2e-4, 3.5e-3)
ADC_MAX_MM2S = 3.5e-3
DEFAULT_B_VALUE = 1000.0
DEFAULT_FLOOR_FRACTION = 0.02
B_VALUE_KEYS = ("DiffusionBValue", "BValue", "bValue", "b_value")


@dataclass(frozen=True)
class RebuildRecord:
    """How one channel of one case was rebuilt (written beside the predictions)."""
    channel: str
    sources: Tuple[str, str]
    b_value: float
    b_value_from: str
    adc_unit: str
    adc_unit_from: str
    noise_floor: Dict[str, float]
    equation: str


NEGATIVE_ADC_SHARE_LIMIT = 0.01  # a scanner's ADC is >= 0 in tissue but for rare noise voxels


def check_adc_sign(adc: np.ndarray, tissue: np.ndarray) -> None:
    """Refuse an ADC map that is negative in more than 1 % of the tissue: it is no ADC (a sign flip, another map),
    and the rebuild would treat every such voxel as background (B0 = DWI there) without a word."""
    values = np.asarray(adc)[np.asarray(tissue, bool)]
    if values.size == 0:
        return
    share = float(np.count_nonzero(values < 0)) / values.size
    if share > NEGATIVE_ADC_SHARE_LIMIT:
        raise ValueError(f"the ADC map is negative in {100 * share:.0f}% of the tissue (median {np.median(values):g}); "
                         f"an ADC is >= 0: check that this is the ADC map and its sign")


def detect_adc_unit(adc: np.ndarray, tissue: Optional[np.ndarray] = None) -> str:
    """The unit of an ADC map from its tissue median (`tissue`: a mask; default every positive voxel).
    ValueError naming the median when it fits none of ADC_UNITS."""
    values = np.asarray(adc, dtype=np.float64)
    values = values[tissue & (values > 0)] if tissue is not None else values[values > 0]
    if values.size == 0:
        raise ValueError("the ADC map has no positive voxel in the tissue: its unit cannot be told (pass "
                         "--adc-unit)")
    median = float(np.median(values))
    low, high = TISSUE_MEDIAN_RANGE_MM2S
    for unit, factor in ADC_UNITS.items():
        if low <= median * factor <= high:
            return unit
    raise ValueError(f"the ADC map's tissue median is {median:g}, which fits no known unit (a tissue median of "
                     f"{low:g}-{high:g} mm2/s, or that x 1e3 or x 1e6); pass --adc-unit "
                     f"({', '.join(ADC_UNITS)}) if the map is right")


def noise_floor(image: np.ndarray, fraction: float = DEFAULT_FLOOR_FRACTION) -> float:
    """`fraction` of the 99th percentile of the positive voxels (0 for an image without any)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the noise floor fraction must be in (0, 1), got {fraction}")
    positive = np.asarray(image)[np.asarray(image) > 0]
    return float(fraction * np.percentile(positive, 99)) if positive.size else 0.0


def _check(arrays: Mapping[str, np.ndarray], b_value: float) -> None:
    if not np.isfinite(b_value) or b_value <= 0:
        raise ValueError(f"the b-value must be a positive number of s/mm2, got {b_value}")
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError("the diffusion images differ in shape: " + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    for name, array in arrays.items():
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} has NaN or infinite voxels")


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):  # cannot happen with the clipping above; a guard, not a fix
        raise ArithmeticError(f"rebuilt {what} is not finite")
    return array.astype(np.float32)


def rebuild_b0(dwi: np.ndarray, adc_mm2s: np.ndarray, b_value: float = DEFAULT_B_VALUE,
               floor: Optional[float] = None) -> np.ndarray:
    """B0 = max(DWI, floor) · exp(b · clip(ADC, 0, ADC_MAX)); DWI itself where ADC <= 0 (background)."""
    _check({"DWI": dwi, "ADC": adc_mm2s}, b_value)
    dwi = np.asarray(dwi, np.float64)
    adc = np.clip(np.asarray(adc_mm2s, np.float64), 0.0, ADC_MAX_MM2S)
    floor = noise_floor(dwi) if floor is None else floor
    b0 = np.maximum(dwi, floor) * np.exp(b_value * adc)
    return _finite(np.where(np.asarray(adc_mm2s) > 0, b0, dwi), "B0")


def rebuild_dwi(b0: np.ndarray, adc_mm2s: np.ndarray, b_value: float = DEFAULT_B_VALUE) -> np.ndarray:
    """DWI = B0 · exp(−b · clip(ADC, 0, ADC_MAX)): attenuation only, no noise amplified."""
    _check({"B0": b0, "ADC": adc_mm2s}, b_value)
    adc = np.clip(np.asarray(adc_mm2s, np.float64), 0.0, ADC_MAX_MM2S)
    return _finite(np.asarray(b0, np.float64) * np.exp(-b_value * adc), "DWI")


def rebuild_adc(dwi: np.ndarray, b0: np.ndarray, b_value: float = DEFAULT_B_VALUE,
                floors: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """ADC (mm²/s) = clip(ln(max(B0, f_B0) / max(DWI, f_DWI)) / b, 0, ADC_MAX); 0 where B0 <= its floor
    (background). floors: (DWI's, B0's), default noise_floor of each."""
    _check({"DWI": dwi, "B0": b0}, b_value)
    dwi, b0 = np.asarray(dwi, np.float64), np.asarray(b0, np.float64)
    dwi_floor, b0_floor = floors if floors is not None else (noise_floor(dwi), noise_floor(b0))
    if b0_floor <= 0 or dwi_floor <= 0:
        raise ValueError("B0 or DWI has no positive voxel: ADC cannot be rebuilt")
    adc = np.log(np.maximum(b0, b0_floor) / np.maximum(dwi, dwi_floor)) / b_value
    return _finite(np.where(b0 > b0_floor, np.clip(adc, 0.0, ADC_MAX_MM2S), 0.0), "ADC")


def rebuild(channel: str, images: Mapping[str, np.ndarray], b_value: float = DEFAULT_B_VALUE,
            adc_unit: Optional[str] = None, floor_fraction: float = DEFAULT_FLOOR_FRACTION,
            b_value_from: str = "default", output_adc_unit: Optional[str] = None
            ) -> Tuple[np.ndarray, RebuildRecord]:
    """Rebuild `channel` (B0, ADC or DWI) from the two others in `images` (name -> array, ADC in `adc_unit`,
    detected from the tissue median when None). A rebuilt ADC is written in `output_adc_unit` (default: the
    unit given, else 1e-3 mm2/s). Returns the image and how it was made."""
    if channel not in SOURCES:
        raise ValueError(f"cannot rebuild {channel!r}: only {', '.join(SOURCES)} (from the two others)")
    needed = SOURCES[channel]
    absent = [name for name in needed if name not in images]
    if absent:
        raise ValueError(f"{channel} is rebuilt from {' and '.join(needed)}, but {', '.join(absent)} is absent")
    for unit in (adc_unit, output_adc_unit):
        if unit is not None and unit not in ADC_UNITS:
            raise ValueError(f"unknown ADC unit {unit!r}; expected one of {', '.join(ADC_UNITS)}")
    floors: Dict[str, float] = {}
    unit_from = "given"
    if channel == "ADC":
        dwi, b0 = images["DWI"], images["B0"]
        floors = {"DWI": noise_floor(dwi, floor_fraction), "B0": noise_floor(b0, floor_fraction)}
        unit = output_adc_unit or adc_unit or "1e-3 mm2/s"
        unit_from = "given" if (output_adc_unit or adc_unit) else "default"
        result = rebuild_adc(dwi, b0, b_value, (floors["DWI"], floors["B0"])) / ADC_UNITS[unit]
        equation = "ADC = ln(B0 / DWI) / b"
    else:
        adc = np.asarray(images["ADC"], np.float64)
        other = images["DWI" if channel == "B0" else "B0"]
        tissue = np.asarray(other) > noise_floor(other, floor_fraction)
        check_adc_sign(adc, tissue)
        if adc_unit is None:
            unit, unit_from = detect_adc_unit(adc, tissue), "tissue median"
        else:
            unit = adc_unit
        adc_mm2s = adc * ADC_UNITS[unit]
        if channel == "B0":
            floors = {"DWI": noise_floor(images["DWI"], floor_fraction)}
            result = rebuild_b0(images["DWI"], adc_mm2s, b_value, floors["DWI"])
            equation = "B0 = DWI * exp(b * ADC)"
        else:
            result = rebuild_dwi(images["B0"], adc_mm2s, b_value)
            equation = "DWI = B0 * exp(-b * ADC)"
    record = RebuildRecord(channel, needed, float(b_value), b_value_from, unit, unit_from, floors, equation)
    return result, record


def b_value_from_sidecar(image_path: str) -> Optional[float]:
    """The b-value stated in the BIDS sidecar JSON of `image_path` (same name, .json), if any: one of
    B_VALUE_KEYS, a positive number (or a list whose largest value is taken: the diffusion weighting)."""
    base = image_path[:-len(".nii.gz")] if image_path.endswith(".nii.gz") else os.path.splitext(image_path)[0]
    path = base + ".json"
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            sidecar = json.load(f)
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(sidecar, dict):
        raise ValueError(f"{path}: a BIDS sidecar is a JSON object ({{\"DiffusionBValue\": 1000, ...}}), got "
                         f"{type(sidecar).__name__} {sidecar!r:.40}")
    for key in B_VALUE_KEYS:
        if key in sidecar:
            values = sidecar[key] if isinstance(sidecar[key], list) and sidecar[key] else [sidecar[key]]
            # bool is an int in Python: true would have been b = 1
            if not all(_is_number(v) for v in values) or max(values) <= 0:
                raise ValueError(f"{path}: {key} must be a positive number of s/mm2 (or a list of them), got "
                                 f"{sidecar[key]!r}")
            return float(max(values))
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def b_value_for(image_path: str, given: Optional[float] = None) -> Tuple[float, str]:
    """(b, where it came from): `given` (--b-value), else the image's BIDS sidecar, else DEFAULT_B_VALUE."""
    if given is not None:
        return float(given), "--b-value"
    stated = b_value_from_sidecar(image_path)
    if stated is not None:
        return stated, f"sidecar of {os.path.basename(image_path)}"
    return DEFAULT_B_VALUE, "default"


def record_as_json(record: RebuildRecord) -> Dict:
    return json.loads(json.dumps(asdict(record)))
