"""An offline, seeded, multi-center stroke-lesion cohort (DWI, ADC, B0) in nnU-Net raw layout.

Why it is built this way: the missing-modality problem must be real, so each channel carries something
the others lack.
  * an ischemic lesion is bright in DWI, dark in ADC (restricted diffusion), mildly bright in B0;
  * a T2 shine-through mimic is just as bright in DWI but not dark in ADC, and very bright in B0;
  * an ADC-dark mimic (e.g. blood products) is dark in ADC but not bright in DWI, and dark in B0.
DWI alone cannot tell lesions from shine-through; ADC or B0 can. Without ADC, B0 still can, except in
center D, which has no B0 (a zero image, as ISLES'22 in the paper). Centers differ in voxel spacing,
gain, contrast (gamma), noise and bias field, as scanners do.
"""
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunet_ext.data.nifti import write_image
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.provenance import provenance

CHANNELS = ("DWI", "ADC", "B0")


@dataclass(frozen=True)
class CenterProfile:
    name: str
    spacing_zyx: Tuple[float, float, float]  # mm
    gains: Tuple[float, float, float]        # per channel (DWI, ADC, B0); a gain of 0 means the channel is absent
    gamma: float                             # contrast: intensity ** gamma
    noise_std: float                         # relative to the tissue intensity
    bias_strength: float                     # amplitude of a smooth multiplicative bias field


CENTERS: Tuple[CenterProfile, ...] = (
    CenterProfile("A", (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), 1.0, 0.04, 0.05),
    CenterProfile("B", (1.5, 1.1, 1.1), (1.6, 0.8, 1.3), 0.85, 0.06, 0.10),
    CenterProfile("C", (1.2, 1.2, 1.2), (0.7, 1.25, 0.9), 1.2, 0.08, 0.08),
    CenterProfile("D", (1.0, 1.3, 1.3), (1.2, 1.0, 0.0), 1.1, 0.05, 0.12),  # no B0
)

# (DWI, ADC, B0) intensities relative to normal tissue = 1, before the center's transform
_CSF = (0.3, 3.0, 2.5)
_LESION = (2.4, 0.5, 1.25)  # its B0 value is CohortSpec.lesion_b0
_SHINE_THROUGH = (2.4, 1.6, 2.6)  # its DWI value is CohortSpec.shine_through_dwi
_ADC_DARK = (0.85, 0.5, 0.45)


def check_cohort_spec(spec, known_centers: Sequence[str], channels: Sequence[str]) -> None:
    """The checks every cohort spec shares (dataset id, case counts, size, centers, droppable channels)."""
    if not 1 <= spec.dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999 (nnU-Net uses three digits), got {spec.dataset_id}")
    if spec.train_per_center < 1 or spec.test_per_center < 0:
        raise ValueError("train_per_center must be >= 1 and test_per_center >= 0")
    if not 24 <= spec.size <= 256:
        raise ValueError(f"size must be in 24..256 (mm of field of view), got {spec.size}")
    unknown = [c for c in spec.centers if c not in known_centers]
    if unknown or not spec.centers or len(set(spec.centers)) != len(spec.centers):
        raise ValueError(f"centers {list(spec.centers)} must be distinct names from {list(known_centers)}")
    bad = [c for c in spec.droppable_channels if c not in channels]
    if bad:
        raise ValueError(f"unknown modality {bad[0]!r}; the cohort has {', '.join(channels)}")


@dataclass(frozen=True)
class CohortSpec:
    dataset_id: int = 501
    name: str = "SyntheticStroke"
    train_per_center: int = 6
    test_per_center: int = 2
    size: int = 48                 # voxels a side at 1 mm; the field of view is size mm in every axis
    seed: int = 0
    droppable_channels: Tuple[str, ...] = ("ADC",)
    centers: Tuple[str, ...] = tuple(c.name for c in CENTERS)
    shine_through_dwi: float = _SHINE_THROUGH[0]  # see generate_case
    lesion_b0: float = _LESION[2]                  # see generate_case
    physics: bool = False                          # DWI = B0 · exp(−b · ADC) per acquisition (see generate_case)

    def __post_init__(self):
        check_cohort_spec(self, [c.name for c in CENTERS], CHANNELS)
        for field, value in (("shine_through_dwi", self.shine_through_dwi), ("lesion_b0", self.lesion_b0)):
            if not 1.0 <= value <= 4.0:
                raise ValueError(f"{field} must be in [1, 4] (tissue = 1), got {value}")

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


def _ellipsoid(coords: Sequence[np.ndarray], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, center, radii)) <= 1.0


def _blob(coords, center, radius_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Irregular blob: union of one to three ellipsoids around `center`."""
    mask = _ellipsoid(coords, center, radius_mm * rng.uniform(0.7, 1.3, 3))
    for _ in range(rng.integers(0, 3)):
        offset = rng.normal(0, radius_mm * 0.6, 3)
        mask |= _ellipsoid(coords, center + offset, radius_mm * rng.uniform(0.5, 0.9, 3))
    return mask


def head_geometry(spacing_zyx: Sequence[float], size: int, rng: np.random.Generator, centre_jitter_mm: float,
                  brain_radii: Sequence[float], brain_jitter: float):
    """The common anatomy of both synthetic cohorts: (shape, coords in mm, head centre, brain, ventricles)."""
    spacing = np.array(spacing_zyx)
    shape = tuple(int(round(size / s)) for s in spacing)
    coords = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    middle = np.array([size / 2.0] * 3) + rng.normal(0, centre_jitter_mm, 3)
    brain = _ellipsoid(coords, middle, np.array(brain_radii) * size * rng.uniform(1 - brain_jitter, 1 + brain_jitter, 3))
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        ventricles |= _ellipsoid(coords, middle + np.array([0, 0, side * 0.07 * size]),
                                 np.array([0.06, 0.16, 0.035]) * size * rng.uniform(0.8, 1.2, 3))
    return shape, coords, middle, brain, ventricles


@dataclass
class CaseAnatomy:
    """Where the tissues of one case are: masks [z, y, x], the mm grid, and the tissue texture."""
    shape: Tuple[int, int, int]
    coords: List[np.ndarray]
    middle: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    lesion: np.ndarray
    shine: np.ndarray
    adc_dark: np.ndarray
    texture: np.ndarray
    partial_volume: np.ndarray

    def tissues(self):
        """(mask, tissue) pairs in the order they are painted over normal tissue."""
        return ((self.ventricles, "csf"), (self.lesion, "lesion"), (self.shine, "shine"), (self.adc_dark, "adc_dark"))


def case_anatomy(center: CenterProfile, size: int, rng: np.random.Generator) -> CaseAnatomy:
    """Brain, ventricles, lesions and the two kinds of mimics of one case, on the center's grid."""
    spacing = np.array(center.spacing_zyx)
    shape, coords, middle, brain, ventricles = head_geometry(spacing, size, rng, 1.0, (0.40, 0.44, 0.38), 0.06)

    # distance to the brain surface and the ventricles, in mm, to place blobs inside the parenchyma
    depth = ndimage.distance_transform_edt(brain & ~ventricles, sampling=spacing)
    candidates = np.argwhere(depth > 0.12 * size)
    occupied = ventricles.copy()

    def place(kind_count: int, radius_range: Tuple[float, float]) -> np.ndarray:
        nonlocal occupied
        placed = np.zeros(shape, bool)
        for _ in range(kind_count):
            for _attempt in range(20):
                voxel = candidates[rng.integers(len(candidates))]
                blob = _blob(coords, np.array([coords[a][tuple(voxel)] for a in range(3)]),
                             rng.uniform(*radius_range), rng) & brain
                halo = ndimage.binary_dilation(blob, iterations=2)
                if blob.sum() >= 4 and not (halo & occupied).any():
                    placed |= blob
                    occupied |= halo
                    break
        return placed

    lesion = place(int(rng.integers(1, 4)), (0.04 * size, 0.12 * size))
    if not lesion.any():  # every case has a lesion: an empty label would be useless for training
        lesion = _ellipsoid(coords, middle + np.array([0, 0.15 * size, 0]), np.array([0.08] * 3) * size) & brain
    shine = place(int(rng.integers(1, 4)), (0.04 * size, 0.10 * size))
    adc_dark = place(int(rng.integers(0, 3)), (0.03 * size, 0.08 * size))

    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=2.5 / spacing)
    texture = 1.0 + 0.12 * texture / (texture.std() + 1e-8)
    partial_volume = 0.6 / spacing  # soft edges, as a scanner's point-spread function gives
    return CaseAnatomy(shape, coords, middle, brain, ventricles, lesion, shine, adc_dark, texture, partial_volume)


def _bias_field(anatomy: CaseAnatomy, center: CenterProfile, size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative receive-coil bias: a linear ramp along a random axis."""
    axis = rng.normal(0, 1, 3)
    axis /= np.linalg.norm(axis)
    ramp = sum(a * (x - m) for a, x, m in zip(axis, anatomy.coords, anatomy.middle)) / size
    return 1.0 + center.bias_strength * 2 * ramp


def generate_case(center: CenterProfile, size: int, rng: np.random.Generator,
                  shine_through_dwi: float = _SHINE_THROUGH[0], lesion_b0: float = _LESION[2],
                  physics: bool = False) -> Tuple[List[np.ndarray], np.ndarray]:
    """One case: three channel arrays [z, y, x] (float32) and the lesion label (uint8).

    shine_through_dwi: DWI brightness of the T2 shine-through mimics (lesions: 2.4). At 2.4 DWI alone cannot
    tell them from lesions; lower values make DWI alone partly sufficient, as in real data.
    lesion_b0: B0 brightness of lesions (tissue 1). Higher values make B0 an easy, redundant lesion cue
    (as T2 hyperintensity of an older infarct), one a model trained with B0 leans on.
    physics: the channels of one acquisition (generate_physical_channels): DWI = B0 · exp(−b · ADC)."""
    anatomy = case_anatomy(center, size, rng)
    if physics:
        return generate_physical_channels(anatomy, center, size, rng, shine_through_dwi, lesion_b0), \
            anatomy.lesion.astype(np.uint8)
    shape = anatomy.shape
    channels = []
    values_of = {"csf": _CSF, "lesion": _LESION[:2] + (lesion_b0,),
                 "shine": (shine_through_dwi,) + _SHINE_THROUGH[1:], "adc_dark": _ADC_DARK}
    for c in range(3):
        intensity = np.ones(shape)
        for mask, tissue in anatomy.tissues():
            weight = ndimage.gaussian_filter(mask.astype(float), anatomy.partial_volume)
            jitter = values_of[tissue][c] * rng.uniform(0.92, 1.08)
            intensity = intensity * (1 - weight) + jitter * weight
        intensity *= anatomy.texture
        channels.append(intensity)

    # the center's scanner: contrast, bias field, gain, noise; background stays exactly 0
    bias = _bias_field(anatomy, center, size, rng)
    images = []
    for c in range(3):
        if center.gains[c] == 0:
            images.append(np.zeros(shape, np.float32))
            continue
        scanned = center.gains[c] * np.power(channels[c], center.gamma) * bias
        scanned = scanned + rng.normal(0, center.noise_std * center.gains[c], shape)
        images.append((np.clip(scanned, 0, None) * anatomy.brain).astype(np.float32))
    return images, anatomy.lesion.astype(np.uint8)


# ---- the physically consistent variant (CohortSpec.physics) ---------------------------------------------------

@dataclass(frozen=True)
class DiffusionScanner:
    """How a center acquires DWI and B0 (one acquisition) and writes its ADC map."""
    b_value: float       # s/mm²
    adc_unit: str        # nnunet_ext.data.diffusion.ADC_UNITS
    gain: float          # signal scale of B0 and DWI (they share it: one acquisition)
    noise_std: float     # Rician noise, relative to normal tissue's B0 before the gain


# centers write ADC as scanners do, in 1e-3 or 1e-6 mm²/s (ISLES'22: 1e-6); C has a lower b
SCANNERS: Dict[str, DiffusionScanner] = {
    "A": DiffusionScanner(1000.0, "1e-3 mm2/s", 1.0, 0.03),
    "B": DiffusionScanner(1000.0, "1e-6 mm2/s", 1.6, 0.04),
    "C": DiffusionScanner(800.0, "1e-3 mm2/s", 0.7, 0.05),
    "D": DiffusionScanner(1000.0, "1e-6 mm2/s", 1.2, 0.035),  # B0 acquired (its ADC is fitted) but not shipped
}
TISSUE_ADC_MM2S = 0.8e-3
# (B0, ADC / tissue ADC) per tissue, tissue = (1, 1): the B0 and ADC columns of the default cohort's tables
_PHYSICAL = {"csf": (_CSF[2], _CSF[1]), "lesion": (None, _LESION[1]), "shine": (None, _SHINE_THROUGH[1]),
             "adc_dark": (_ADC_DARK[2], _ADC_DARK[1])}


def physical_tissue_values(shine_through_dwi: float, lesion_b0: float) -> Dict[str, Tuple[float, float]]:
    """tissue -> (B0 relative to normal tissue, ADC in mm²/s). The shine-through mimic's B0 is chosen so that its
    DWI at b = 1000 is `shine_through_dwi` times normal tissue's, as in the default cohort (its ADC stays normal-
    ish, 1.6 x tissue: the B0 brightness alone makes it DWI-bright); lesions have B0 `lesion_b0`, ADC 0.5 x tissue."""
    values = {"tissue": (1.0, TISSUE_ADC_MM2S)}
    for tissue, (b0, adc_ratio) in _PHYSICAL.items():
        adc = adc_ratio * TISSUE_ADC_MM2S
        if tissue == "lesion":
            b0 = lesion_b0
        elif tissue == "shine":
            b0 = shine_through_dwi * np.exp(1000.0 * (adc - TISSUE_ADC_MM2S))
        values[tissue] = (float(b0), adc)
    return values


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|signal + n1 + i·n2|: the magnitude noise of an MR image."""
    return np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))


def generate_physical_channels(anatomy: CaseAnatomy, center: CenterProfile, size: int, rng: np.random.Generator,
                               shine_through_dwi: float, lesion_b0: float) -> List[np.ndarray]:
    """[DWI, ADC, B0] of one acquisition: true B0 and ADC maps per tissue, DWI = B0 · exp(−b · ADC), the same gain,
    bias and Rician noise on B0 and DWI, and the ADC map fitted by the scanner from those noisy images
    (ln(B0 / DWI) / b, clipped to [0, 3.5e-3] mm²/s) in its unit. No contrast (gamma) transform: scanners store
    linear magnitudes, and one would break the equation. Center D's B0 is acquired (its ADC is fitted from it)
    and then shipped as a zero image, as ISLES'22 ships no B0."""
    from nnunet_ext.data.diffusion import ADC_MAX_MM2S, ADC_UNITS
    scanner = SCANNERS[center.name]
    values = physical_tissue_values(shine_through_dwi, lesion_b0)
    b0_true = np.full(anatomy.shape, values["tissue"][0])
    adc_true = np.full(anatomy.shape, values["tissue"][1])
    for mask, tissue in anatomy.tissues():
        weight = ndimage.gaussian_filter(mask.astype(float), anatomy.partial_volume)
        jitter = rng.uniform(0.92, 1.08, 2)
        b0_true = b0_true * (1 - weight) + values[tissue][0] * jitter[0] * weight
        adc_true = adc_true * (1 - weight) + values[tissue][1] * jitter[1] * weight
    b0_true *= anatomy.texture
    adc_true *= 1.0 + 0.25 * (anatomy.texture - 1.0)  # a milder texture: ADC varies less than T2 across tissue
    signal = scanner.gain * _bias_field(anatomy, center, size, rng) * b0_true
    sigma = scanner.noise_std * scanner.gain
    b0 = _rician(signal, sigma, rng)
    dwi = _rician(signal * np.exp(-scanner.b_value * adc_true), sigma, rng)
    floor = sigma  # below the noise level a voxel says nothing about diffusion (the scanner's threshold)
    adc = np.clip(np.log(np.maximum(b0, floor) / np.maximum(dwi, floor)) / scanner.b_value, 0.0, ADC_MAX_MM2S)
    brain = anatomy.brain
    images = [dwi * brain, adc / ADC_UNITS[scanner.adc_unit] * brain, b0 * brain]
    if center.gains[2] == 0:
        images[2] = np.zeros(anatomy.shape)
    return [image.astype(np.float32) for image in images]


def case_plan(spec, prefix: str = "stroke") -> List[Tuple[str, str, str]]:
    """(case id, center, 'Tr' or 'Ts') for every case of a cohort spec, in a fixed order."""
    plan = []
    for center in spec.centers:
        for i in range(spec.train_per_center + spec.test_per_center):
            plan.append((f"{prefix}_{center}_{i:03d}", center, "Tr" if i < spec.train_per_center else "Ts"))
    return plan


def write_cohort(spec: CohortSpec, raw_root: str, overwrite: bool = False, progress: bool = True) -> str:
    """Write the cohort to `raw_root/DatasetXXX_Name` atomically; returns that folder.

    Everything is written to a hidden sibling folder first and renamed into place at the end, so an
    interrupted run never leaves a half-written dataset behind.
    """
    final = os.path.join(raw_root, spec.folder_name)
    with staged_dataset_folder(raw_root, spec.folder_name, overwrite) as staging:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            os.makedirs(os.path.join(staging, sub))
        profiles = {c.name: c for c in CENTERS}
        plan = case_plan(spec)
        for number, (case_id, center_name, split) in enumerate(plan):
            # one independent stream per case: a case does not change when others are added
            rng = np.random.default_rng([spec.seed, spec.dataset_id, number])
            center = profiles[center_name]
            images, label = generate_case(center, spec.size, rng, spec.shine_through_dwi, spec.lesion_b0,
                                          spec.physics)
            for c, image in enumerate(images):
                write_image(os.path.join(staging, f"images{split}", f"{case_id}_{c:04d}.nii.gz"), image,
                            center.spacing_zyx)
            if spec.physics:  # a BIDS-style sidecar of the DWI: its b, for nnunet_ext_predict --rebuild
                write_json(os.path.join(staging, f"images{split}", f"{case_id}_0000.json"),
                           {"DiffusionBValue": SCANNERS[center_name].b_value})
            write_image(os.path.join(staging, f"labels{split}", f"{case_id}.nii.gz"), label, center.spacing_zyx)
            if progress:
                print(f"\rcohort: {number + 1}/{len(plan)} cases", end="", flush=True)
        if progress:
            print()
        num_training = sum(1 for _, _, split in plan if split == "Tr")
        dataset_json = {
            "channel_names": {str(i): name for i, name in enumerate(CHANNELS)},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": num_training,
            "file_ending": ".nii.gz",
            "droppable_channels": list(spec.droppable_channels),
            "name": spec.name,
            "description": "nnunet-ext synthetic multi-center stroke cohort (center D has no B0: zero image)",
        }
        write_json(os.path.join(staging, "dataset.json"), dataset_json)
        write_json(os.path.join(staging, "case_centers.json"), {case: center for case, center, _ in plan})
        write_json(os.path.join(staging, "cohort.json"), {
            "spec": asdict(spec), "centers": [asdict(profiles[c]) for c in spec.centers],
            **({"scanners": {c: asdict(SCANNERS[c]) for c in spec.centers}} if spec.physics else {}),
            "splits": {case: split for case, _, split in plan}, "provenance": provenance(seed=spec.seed)})
    return final


