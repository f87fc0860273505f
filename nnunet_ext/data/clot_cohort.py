"""An offline, seeded, multi-center clot (thrombus) cohort (DWI, SWAN, PHASE) in nnU-Net raw layout.

Why it is built this way: the clot must not be findable from one cue alone, as in the paper (section 4.2).
  * the clot is a short segment of an artery, dark in SWAN (susceptibility vessel sign) with a paramagnetic
    (positive) PHASE;
  * calcifications are just as dark in SWAN but diamagnetic (negative PHASE): PHASE tells them apart;
  * veins are dark in SWAN and paramagnetic too, but long tubes: only shape and context tell them apart;
  * the ischemic lesion, bright in DWI, lies downstream of the clot (the whole territory of the occluded
    trunk for a proximal occlusion, one branch's territory for a distal one): DWI says where to look, which is
    what the cross-attention (DWI queries, SWAN/PHASE keys) is meant to use.
Centers differ in spacing, gains, noise and bias field; center C is a Siemens-like site: its susceptibility
image is SWI (magnitude darkened by a paramagnetic phase mask, written in the SWAN slot) and it has no PHASE (a
black image), the paper's FOCH scenario.

Labels: the clot (1) in labelsTr/labelsTs (what nnU-Net trains on); the lesion (1) in labelsTr_lesion /
labelsTs_lesion, for the lesion-distance post-processing. Per case, occlusions.json records proximal or distal
occlusion, the vessel and the hemisphere (+x or -x half of the image); case_centers.json and cohort.json as in
the stroke cohort.

Presets (CLOT_PRESETS; ClotCohortSpec.preset): every generation parameter lives in one frozen ClotPreset.
  * 'easy' (default): the original cohort, bit for bit: a high-contrast clot of tens of voxels, DWI on the SWAN grid.
  * 'hard': the paper's problem (abstract: "the culprit thrombus is small, low-contrast, and variably expressed
    across modalities ... domain shifts, anisotropy"): clots of a few to a few tens of voxels only modestly darker
    than the vessel, noise of the order of that contrast, slices 3.5-4x thicker than the pixels, DWI acquired on a
    2x coarser grid then resampled onto the SWAN grid (as the paper's coregistration does, section 5.2), and mimics
    that look like a clot in one slice (oblique veins, single-slice dark segments). Its settings and the reasons
    for each: benchmarks/results/clot_cohort_hard.md. They were fixed before any network was trained on them.
"""
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunet_ext.data.nifti import write_image
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.data.synthetic_cohort import _blob, case_plan, check_cohort_spec, head_geometry
from nnunet_ext.provenance import provenance

CHANNELS = ("DWI", "SWAN", "PHASE")
LESION_LABEL_FOLDERS = {"Tr": "labelsTr_lesion", "Ts": "labelsTs_lesion"}
OCCLUSION_FILE = "occlusions.json"


@dataclass(frozen=True)
class ClotCenterProfile:
    name: str
    spacing_zyx: Tuple[float, float, float]  # mm; slices are thicker than the in-plane pixels
    gains: Tuple[float, float, float]        # DWI, SWAN (or SWI), PHASE; a gain of 0 means the channel is absent
    susceptibility: str                      # 'SWAN' (GE magnitude) or 'SWI' (Siemens: magnitude x phase mask)
    noise_std: float                         # relative to the tissue intensity
    bias_strength: float                     # amplitude of a smooth multiplicative bias field


@dataclass(frozen=True)
class ClotTissues:
    """(DWI, SWAN, PHASE) of each tissue class; DWI and SWAN relative to normal tissue = 1, PHASE signed."""
    csf: Tuple[float, float, float]
    lesion: Tuple[float, float, float]
    artery: Tuple[float, float, float]         # flowing blood
    clot: Tuple[float, float, float]           # susceptibility vessel sign, paramagnetic
    vein: Tuple[float, float, float]           # deoxyhaemoglobin: dark and paramagnetic, like the clot
    calcification: Tuple[float, float, float]  # dark, diamagnetic


Range = Tuple[float, float]  # uniform draw; a range with equal ends draws nothing from the random stream


@dataclass(frozen=True)
class ClotPreset:
    """Every parameter of one version of the cohort. Lengths are fractions of the field of view (`size`) unless
    named _mm; radii of vessel-like structures are factors of the vessel radius."""
    name: str
    centers: Tuple[ClotCenterProfile, ...]
    tissues: ClotTissues
    vessel_radius: float                  # fraction of size ...
    vessel_radius_min_mm: float           # ... but at least this
    clot_length: Range                    # fraction of size (at most 0.8 of the arterial segment)
    clot_radius: Range                    # x vessel radius (blooming: the dark signal is wider than the lumen)
    clot_slab_offsets: Tuple[float, ...]  # slice fractions: a voxel is clot if the clot is near any of these depths
    min_clot_voxels: int                  # a thick-slice grid can miss a thin clot: below this many voxels ...
    clot_fill_voxels: int                 # ... the clot label takes this many voxels nearest to its axis
    veins: Tuple[int, int]                # count (inclusive) of long straight veins besides the superior one
    vein_half_length: Range
    vein_radius: Range
    calcifications: Tuple[int, int]
    calcification_radius: Range
    oblique_veins: Tuple[int, int]        # veins crossing the slices: a clot-sized dot that moves from slice to slice
    oblique_tilt_deg: Range               # angle to the slice normal
    oblique_half_length: Range
    slice_mimics: Tuple[int, int]         # short dark paramagnetic segments present in one slice only
    slice_mimic_half_length: Range
    slice_mimic_on_artery: float          # share of them placed on an artery that is not the occluded one
    mimic_radius: Range                   # oblique veins and slice mimics
    texture: float                        # std of the smooth multiplicative tissue texture
    tissue_jitter: Range                  # per-case factor on every tissue value
    partial_volume_mm: float              # DWI edge blur
    blooming_mm: float                    # SWAN/PHASE blur of susceptibility sources
    background_phase: float               # std of the smooth background phase
    acquisition_factor: Tuple[Tuple[int, int, int], ...]  # per channel: voxel size / SWAN voxel size (z, y, x)

    def __post_init__(self):
        if len(self.acquisition_factor) != len(CHANNELS) or any(f < 1 for a in self.acquisition_factor for f in a):
            raise ValueError(f"acquisition_factor needs one (z, y, x) factor >= 1 per channel {CHANNELS}, "
                             f"got {self.acquisition_factor}")


CLOT_CENTERS: Tuple[ClotCenterProfile, ...] = (
    ClotCenterProfile("A", (2.0, 0.9, 0.9), (1.0, 1.0, 1.0), "SWAN", 0.04, 0.05),
    ClotCenterProfile("B", (1.6, 1.0, 1.0), (1.4, 0.8, 1.3), "SWAN", 0.06, 0.10),
    ClotCenterProfile("C", (1.8, 0.8, 0.8), (0.9, 1.2, 0.0), "SWI", 0.05, 0.08),  # SWI, no PHASE
)

_EASY = ClotPreset(
    name="easy", centers=CLOT_CENTERS,
    tissues=ClotTissues(csf=(0.3, 1.35, 0.0), lesion=(2.4, 1.05, 0.0), artery=(1.0, 1.2, 0.0),
                        clot=(1.05, 0.25, 1.0), vein=(0.95, 0.3, 0.8), calcification=(0.8, 0.25, -1.0)),
    vessel_radius=0.03, vessel_radius_min_mm=1.0, clot_length=(0.12, 0.2), clot_radius=(1.3, 1.3),
    clot_slab_offsets=(0.0,),
    min_clot_voxels=3, clot_fill_voxels=1,
    veins=(1, 3), vein_half_length=(0.18, 0.25), vein_radius=(1.0, 1.3),
    calcifications=(1, 3), calcification_radius=(0.03, 0.05),
    oblique_veins=(0, 0), oblique_tilt_deg=(0.0, 0.0), oblique_half_length=(0.0, 0.0),
    slice_mimics=(0, 0), slice_mimic_half_length=(0.0, 0.0), slice_mimic_on_artery=0.0, mimic_radius=(1.0, 1.0),
    texture=0.08, tissue_jitter=(0.92, 1.08), partial_volume_mm=0.5, blooming_mm=0.8, background_phase=0.1,
    acquisition_factor=((1, 1, 1), (1, 1, 1), (1, 1, 1)))

# The reasons for every value: benchmarks/results/clot_cohort_hard.md. Fixed before any network was trained on it.
_HARD = ClotPreset(
    name="hard",
    centers=(
        ClotCenterProfile("A", (3.0, 0.8, 0.8), (1.0, 1.0, 1.0), "SWAN", 0.10, 0.10),
        ClotCenterProfile("B", (3.5, 0.9, 0.9), (1.4, 0.8, 1.3), "SWAN", 0.13, 0.15),
        ClotCenterProfile("C", (2.5, 0.7, 0.7), (0.9, 1.2, 0.0), "SWI", 0.11, 0.12),  # SWI, no PHASE
    ),
    tissues=ClotTissues(csf=(0.3, 1.3, 0.0), lesion=(2.0, 1.0, 0.0), artery=(1.0, 1.1, 0.0),
                        clot=(1.0, 0.6, 0.45), vein=(0.95, 0.6, 0.45), calcification=(0.85, 0.6, -0.45)),
    vessel_radius=0.02, vessel_radius_min_mm=0.7, clot_length=(0.03, 0.12), clot_radius=(0.8, 1.1),
    clot_slab_offsets=(-0.25, 0.0, 0.25),
    min_clot_voxels=4, clot_fill_voxels=4,
    veins=(1, 3), vein_half_length=(0.18, 0.25), vein_radius=(1.0, 1.3),
    calcifications=(1, 3), calcification_radius=(0.015, 0.03),
    oblique_veins=(1, 3), oblique_tilt_deg=(25.0, 60.0), oblique_half_length=(0.12, 0.2),
    slice_mimics=(2, 4), slice_mimic_half_length=(0.02, 0.05), slice_mimic_on_artery=0.5, mimic_radius=(0.9, 1.2),
    texture=0.08, tissue_jitter=(0.92, 1.08), partial_volume_mm=0.5, blooming_mm=0.5, background_phase=0.1,
    acquisition_factor=((2, 2, 2), (1, 1, 1), (1, 1, 1)))

CLOT_PRESETS: Dict[str, ClotPreset] = {p.name: p for p in (_EASY, _HARD)}


def clot_preset(name: str) -> ClotPreset:
    if name not in CLOT_PRESETS:
        raise ValueError(f"unknown clot cohort preset {name!r}; presets: {', '.join(CLOT_PRESETS)}")
    return CLOT_PRESETS[name]


@dataclass(frozen=True)
class ClotCohortSpec:
    dataset_id: int = 502
    name: str = "SyntheticClot"
    train_per_center: int = 6
    test_per_center: int = 2
    size: int = 64                 # field of view in mm in every axis
    seed: int = 0
    proximal_fraction: float = 0.5
    droppable_channels: Tuple[str, ...] = ("PHASE",)
    centers: Tuple[str, ...] = tuple(c.name for c in CLOT_CENTERS)
    preset: str = "easy"           # a CLOT_PRESETS name

    def __post_init__(self):
        check_cohort_spec(self, [c.name for c in clot_preset(self.preset).centers], CHANNELS)
        if not 0.0 <= self.proximal_fraction <= 1.0:
            raise ValueError(f"proximal_fraction must be in [0, 1], got {self.proximal_fraction}")

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


@dataclass(frozen=True)
class ClotCase:
    images: List[np.ndarray]   # DWI, SWAN (or SWI), PHASE; [z, y, x] float32
    clot: np.ndarray           # uint8
    lesion: np.ndarray         # uint8
    occlusion: Dict[str, str]  # {'occlusion': 'proximal'|'distal', 'vessel': ..., 'hemisphere': '+x'|'-x'}
    # the other structures (bool masks: arteries (clot excluded), veins, calcifications, oblique_veins,
    # slice_mimics), for checks and statistics; not written
    structures: Dict[str, np.ndarray] = field(default_factory=dict)


def segment_distance(coords: Sequence[np.ndarray], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel centre to the segment start-end."""
    direction = end - start
    squared = float(direction @ direction)
    offsets = [c - s for c, s in zip(coords, start)]
    t = sum(o * d for o, d in zip(offsets, direction)) / max(squared, 1e-12)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(sum((o - t * d) ** 2 for o, d in zip(offsets, direction)))


def polyline_distance(coords: Sequence[np.ndarray], points: Sequence[np.ndarray]) -> np.ndarray:
    return np.minimum.reduce([segment_distance(coords, a, b) for a, b in zip(points[:-1], points[1:])])


def _draw(rng: np.random.Generator, bounds: Range) -> float:
    """Uniform in bounds; equal ends draw nothing, so a fixed setting leaves the random stream as it was."""
    return bounds[0] if bounds[0] == bounds[1] else float(rng.uniform(*bounds))


def _count(rng: np.random.Generator, bounds: Tuple[int, int]) -> int:
    """Integer in [lo, hi]; equal ends draw nothing."""
    return bounds[0] if bounds[0] == bounds[1] else int(rng.integers(bounds[0], bounds[1] + 1))


def block_mean(image: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """The image seen by voxels `factor` times larger (edge-padded to a whole number of blocks)."""
    pad = [(0, -n % f) for n, f in zip(image.shape, factor)]
    padded = np.pad(image, pad, mode="edge")
    blocks = [(n // f, f) for n, f in zip(padded.shape, factor)]
    return padded.reshape([d for pair in blocks for d in pair]).mean(axis=(1, 3, 5))


def resample_from_coarse(coarse: np.ndarray, factor: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Linear interpolation of a grid with `factor` times larger voxels onto the fine grid (same origin corner),
    as a coregistration with linear interpolation does."""
    scale = np.array([1.0 / f for f in factor])
    return ndimage.affine_transform(coarse, scale, offset=0.5 * scale - 0.5, output_shape=tuple(shape), order=1,
                                    mode="nearest")


def acquire(image: np.ndarray, factor: Sequence[int], noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Noisy acquisition of `image` (given on the fine grid) with voxels `factor` times larger, resampled back
    onto the fine grid; factor 1 is the plain image plus noise."""
    if all(f == 1 for f in factor):
        return image + rng.normal(0, noise_std, image.shape)
    coarse = block_mean(image, factor)
    return resample_from_coarse(coarse + rng.normal(0, noise_std, coarse.shape), factor, image.shape)


def _arterial_tree(middle: np.ndarray, size: float, side: int, rng: np.random.Generator) -> Dict[str, List]:
    """One hemisphere's middle-cerebral-like tree: a trunk (M1) and two branches (M2), points in mm (z, y, x)."""
    def point(z, y, x):
        return middle + np.array([z, y, side * x]) * size + rng.normal(0, 0.015 * size, 3)
    root, bifurcation = point(-0.10, 0.05, 0.04), point(-0.08, 0.06, 0.24)
    return {"M1": [root, bifurcation],
            "M2 superior": [bifurcation, point(0.10, 0.12, 0.30), point(0.26, 0.10, 0.24)],
            "M2 inferior": [bifurcation, point(-0.02, -0.12, 0.31), point(0.10, -0.26, 0.22)]}


def _slice_mimics(preset: ClotPreset, coords, spacing, size, vessel_radius, trees, candidates, avoid, rng):
    """Dark paramagnetic structures that look like the clot in one slice and not in the next: veins crossing the
    slices obliquely (a dot that moves) and short segments confined to one slice (some on a non-occluded artery).
    None is placed where `avoid` is set (tried a few times, then skipped)."""
    shape = coords[0].shape
    branches = [points for tree in trees.values() for points in tree.values()]

    def anchor(on_artery: bool):
        for _ in range(20):
            if on_artery:
                points = branches[rng.integers(len(branches))]
                k = int(rng.integers(len(points) - 1))
                point = points[k] + rng.uniform(0.2, 0.8) * (points[k + 1] - points[k])
            else:
                point = np.array([coords[a][tuple(candidates[rng.integers(len(candidates))])] for a in range(3)])
            voxel = tuple(np.clip((point / spacing).astype(int), 0, np.array(shape) - 1))
            if not avoid[voxel]:
                return point
        return None

    oblique = np.zeros(shape, bool)
    for _ in range(_count(rng, preset.oblique_veins)):
        tilt, azimuth = np.deg2rad(_draw(rng, preset.oblique_tilt_deg)), rng.uniform(0, 2 * np.pi)
        direction = np.array([np.cos(tilt), np.sin(tilt) * np.sin(azimuth), np.sin(tilt) * np.cos(azimuth)])
        half = direction * _draw(rng, preset.oblique_half_length) * size
        radius = _draw(rng, preset.mimic_radius) * vessel_radius
        point = anchor(False)
        if point is not None:
            oblique |= segment_distance(coords, point - half, point + half) <= radius
    single = np.zeros(shape, bool)
    for _ in range(_count(rng, preset.slice_mimics)):
        azimuth = rng.uniform(0, 2 * np.pi)
        half = np.array([0.0, np.sin(azimuth), np.cos(azimuth)]) * _draw(rng, preset.slice_mimic_half_length) * size
        radius = _draw(rng, preset.mimic_radius) * vessel_radius
        on_artery = bool(rng.random() < preset.slice_mimic_on_artery)
        for _ in range(5):  # not where another one lies in a neighbouring slice: that would continue it
            point = anchor(on_artery)
            if point is None:
                break
            z = int(np.clip(point[0] // spacing[0], 0, shape[0] - 1))
            point[0] = (z + 0.5) * spacing[0]  # on a slice centre, and cut to that slice: in that slice only
            footprint = segment_distance([c[z] for c in coords], point - half, point + half) <= radius
            if not any(single[n][footprint].any() for n in (z - 1, z + 1) if 0 <= n < shape[0]):
                single[z] |= footprint
                break
    return oblique & ~avoid, single & ~avoid


def generate_clot_case(center: ClotCenterProfile, size: int, rng: np.random.Generator,
                       proximal_fraction: float = 0.5, preset: ClotPreset = _EASY) -> ClotCase:
    """One case of `preset` at `center` (one of preset.centers). Draws happen in a fixed order; the settings of
    'easy' draw exactly what the original cohort drew, so its cases are unchanged."""
    tissues = preset.tissues
    spacing = np.array(center.spacing_zyx)
    shape, coords, middle, brain, ventricles = head_geometry(spacing, size, rng, 0.5, (0.40, 0.44, 0.40), 0.05)

    vessel_radius = max(preset.vessel_radius_min_mm, preset.vessel_radius * size)
    trees = {side: _arterial_tree(middle, size, side, rng) for side in (-1, 1)}
    arteries = np.zeros(shape, bool)
    for tree in trees.values():
        for points in tree.values():
            arteries |= polyline_distance(coords, points) <= vessel_radius

    # the occlusion: a short clot in one segment of one tree; everything after it is downstream
    side = int(rng.choice([-1, 1]))
    tree = trees[side]
    proximal = bool(rng.random() < proximal_fraction)
    vessel = "M1" if proximal else str(rng.choice(["M2 superior", "M2 inferior"]))
    segment = int(rng.integers(0, len(tree[vessel]) - 1))
    start, end = tree[vessel][segment], tree[vessel][segment + 1]
    length = float(np.linalg.norm(end - start))
    clot_length = min(0.8 * length, rng.uniform(*preset.clot_length) * size)
    centre = rng.uniform(0.5 * clot_length, length - 0.5 * clot_length) / length
    unit = (end - start) / length
    clot_start = start + unit * (centre * length - 0.5 * clot_length)
    clot_end = start + unit * (centre * length + 0.5 * clot_length)
    clot_radius = _draw(rng, preset.clot_radius) * vessel_radius
    clot_distance = segment_distance(coords, clot_start, clot_end)
    # a thick slice shows a clot that passes through its central part, not only one through its centre plane
    slab_distance = np.minimum.reduce([clot_distance] + [
        segment_distance([coords[0] + offset * spacing[0], coords[1], coords[2]], clot_start, clot_end)
        for offset in preset.clot_slab_offsets if offset != 0.0])
    clot = (slab_distance <= clot_radius) & brain
    if clot.sum() < preset.min_clot_voxels:
        nearest = np.argsort(slab_distance, axis=None, kind="stable")[:preset.clot_fill_voxels]
        clot.flat[nearest] = True

    downstream = [[clot_end] + tree[vessel][segment + 1:]]
    if proximal:
        downstream += [tree["M2 superior"], tree["M2 inferior"]]
    # each branch feeds the cortex beyond its last point too
    downstream = [points + [points[-1] + 0.08 * size * (points[-1] - points[-2]) /
                            max(float(np.linalg.norm(points[-1] - points[-2])), 1e-6)] for points in downstream]
    territory = np.minimum.reduce([polyline_distance(coords, points) for points in downstream])
    radius = (0.14 if proximal else 0.11) * size
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=3.0 / spacing)
    wobble /= wobble.std() + 1e-8
    hemisphere = (coords[2] - middle[2]) * side > 0
    lesion = (territory <= radius * (1 + 0.2 * wobble)) & brain & ~ventricles & hemisphere
    # the infarct lies downstream, not around the clot itself
    lesion &= clot_distance > clot_radius + 0.05 * size

    # mimics: veins (long, dark, paramagnetic) and calcifications (small, dark, diamagnetic)
    veins = polyline_distance(coords, [middle + np.array([0.30, -0.28, 0.0]) * size,
                                       middle + np.array([0.36, 0.0, 0.0]) * size,
                                       middle + np.array([0.30, 0.28, 0.0]) * size]) <= 1.2 * vessel_radius
    for _ in range(_count(rng, preset.veins)):
        direction = rng.normal(0, 1, 3)
        direction /= np.linalg.norm(direction)
        anchor = middle + rng.normal(0, 1, 3) * np.array([0.12, 0.16, 0.14]) * size
        half = direction * _draw(rng, preset.vein_half_length) * size
        radius = _draw(rng, preset.vein_radius) * vessel_radius
        veins |= segment_distance(coords, anchor - half, anchor + half) <= radius
    veins &= brain & ~clot
    depth = ndimage.distance_transform_edt(brain & ~ventricles, sampling=spacing)
    candidates = np.argwhere(depth > 0.08 * size)
    calcifications = np.zeros(shape, bool)
    for _ in range(_count(rng, preset.calcifications)):
        voxel = candidates[rng.integers(len(candidates))]
        calcifications |= _blob(coords, np.array([coords[a][tuple(voxel)] for a in range(3)]),
                                _draw(rng, preset.calcification_radius) * size, rng)
    calcifications &= brain & ~clot & ~veins
    # slice mimics keep clear of the clot and of its downstream territory: there only the clot explains the lesion
    avoid = ~brain | (clot_distance <= clot_radius + 0.1 * size) | (territory <= radius)
    oblique, single = _slice_mimics(preset, coords, spacing, size, vessel_radius, trees, candidates, avoid, rng)

    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=2.0 / spacing)
    texture = 1.0 + preset.texture * texture / (texture.std() + 1e-8)
    partial_volume = preset.partial_volume_mm / spacing
    blooming = preset.blooming_mm / spacing  # susceptibility sources look larger in SWAN and PHASE than they are
    layers = ((ventricles, tissues.csf), (lesion, tissues.lesion), (arteries & ~clot, tissues.artery),
              (veins | oblique | single, tissues.vein), (calcifications, tissues.calcification), (clot, tissues.clot))
    tissue = []
    for c in range(3):
        intensity = np.full(shape, 0.0 if c == 2 else 1.0)
        for mask, values in layers:
            weight = ndimage.gaussian_filter(mask.astype(float), partial_volume if c == 0 else blooming)
            intensity = intensity * (1 - weight) + values[c] * rng.uniform(*preset.tissue_jitter) * weight
        tissue.append(intensity * texture if c < 2 else intensity)
    background_phase = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=8.0 / spacing)
    tissue[2] = tissue[2] + preset.background_phase * background_phase / (background_phase.std() + 1e-8)

    axis = rng.normal(0, 1, 3)
    axis /= np.linalg.norm(axis)
    bias = 1.0 + center.bias_strength * 2 * sum(a * (x - m) for a, x, m in zip(axis, coords, middle)) / size
    dwi, swan, phase = tissue
    if center.susceptibility == "SWI":  # SWI: magnitude times a paramagnetic phase mask, then the phase is gone
        swan = swan * (1 - 0.5 * np.clip(phase, 0, 1)) ** 2
    images = []
    for c, image in enumerate((dwi, swan, phase)):
        gain = center.gains[c]
        if gain == 0:
            images.append(np.zeros(shape, np.float32))
            continue
        noise_std = center.noise_std * max(gain, 1e-3)
        if c < 2:
            scanned = np.clip(acquire(gain * image * bias, preset.acquisition_factor[c], noise_std, rng), 0, None)
        else:
            scanned = acquire(gain * image, preset.acquisition_factor[c], noise_std, rng)  # signed
        images.append((scanned * brain).astype(np.float32))
    occlusion = {"occlusion": "proximal" if proximal else "distal", "vessel": vessel,
                 "hemisphere": "+x" if side > 0 else "-x"}
    structures = {"arteries": arteries & ~clot, "veins": veins, "calcifications": calcifications,
                  "oblique_veins": oblique, "slice_mimics": single}
    return ClotCase(images, clot.astype(np.uint8), lesion.astype(np.uint8), occlusion, structures)


def clot_contrast(case: ClotCase, spacing_zyx: Sequence[float], channel: int, vessel_mm: float = 5.0,
                  shell_mm: float = 8.0) -> Dict[str, float]:
    """How visible the clot is in one channel: the mean over the clot against the mean over the adjacent vessel
    (artery voxels 1 to `vessel_mm` from the clot) and over the adjacent tissue (voxels within `shell_mm` of the
    clot and over 2 mm from any structure), in units of `noise`, the std over that tissue (noise, texture and bias
    together: what a detector has to see through). Signed so that a visible clot is positive: darker in SWAN,
    more paramagnetic in PHASE. `z_vessel`: the difference of the two means over its standard error."""
    clot = case.clot.astype(bool)
    structures = case.structures
    image = case.images[channel]
    distance = ndimage.distance_transform_edt(~clot, sampling=spacing_zyx)
    vessel = structures["arteries"] & (distance > 1.0) & (distance <= vessel_mm)
    anything = clot | case.lesion.astype(bool) | np.logical_or.reduce(list(structures.values()))
    tissue = (ndimage.distance_transform_edt(~anything, sampling=spacing_zyx) > 2.0) & (distance <= shell_mm) & \
        (case.images[0] > 0)
    sign = 1.0 if channel == 2 else -1.0
    noise = float(image[tissue].std())
    difference = sign * float(image[clot].mean() - image[vessel].mean()) if vessel.any() else float("nan")
    tissue_difference = sign * float(image[clot].mean() - image[tissue].mean())
    error = noise * np.sqrt(1.0 / clot.sum() + 1.0 / max(int(vessel.sum()), 1))
    return {"clot_voxels": int(clot.sum()), "vessel_voxels": int(vessel.sum()), "noise": noise,
            "cnr_vessel": difference / noise, "cnr_tissue": tissue_difference / noise,
            "z_vessel": difference / error}


def clot_cases(spec: ClotCohortSpec) -> Iterator[Tuple[str, str, str, ClotCase]]:
    """(case id, center, 'Tr' or 'Ts', case) for every case of the cohort, generated one at a time."""
    preset = clot_preset(spec.preset)
    profiles = {c.name: c for c in preset.centers}
    for number, (case_id, center, split) in enumerate(case_plan(spec, prefix="clot")):
        # one independent stream per case: a case does not change when others are added
        rng = np.random.default_rng([spec.seed, spec.dataset_id, number])
        yield case_id, center, split, generate_clot_case(profiles[center], spec.size, rng, spec.proximal_fraction,
                                                         preset)


def write_clot_cohort(spec: ClotCohortSpec, raw_root: str, overwrite: bool = False, progress: bool = True) -> str:
    """Write the clot cohort to `raw_root/DatasetXXX_Name` atomically (as `write_cohort`); returns that folder."""
    final = os.path.join(raw_root, spec.folder_name)
    with staged_dataset_folder(raw_root, spec.folder_name, overwrite) as staging:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", *LESION_LABEL_FOLDERS.values()):
            os.makedirs(os.path.join(staging, sub))
        preset = clot_preset(spec.preset)
        profiles = {c.name: c for c in preset.centers}
        plan = case_plan(spec, prefix="clot")
        occlusions = {}
        for number, (case_id, center_name, split, case) in enumerate(clot_cases(spec)):
            center = profiles[center_name]
            for c, image in enumerate(case.images):
                write_image(os.path.join(staging, f"images{split}", f"{case_id}_{c:04d}.nii.gz"), image,
                            center.spacing_zyx)
            write_image(os.path.join(staging, f"labels{split}", f"{case_id}.nii.gz"), case.clot, center.spacing_zyx)
            write_image(os.path.join(staging, LESION_LABEL_FOLDERS[split], f"{case_id}.nii.gz"), case.lesion,
                        center.spacing_zyx)
            occlusions[case_id] = {**case.occlusion, "center": center_name, "split": split}
            if progress:
                print(f"\rclot cohort: {number + 1}/{len(plan)} cases", end="", flush=True)
        if progress:
            print()
        dataset_json = {
            "channel_names": {str(i): name for i, name in enumerate(CHANNELS)},
            "labels": {"background": 0, "clot": 1},
            "numTraining": sum(1 for _, _, split in plan if split == "Tr"),
            "file_ending": ".nii.gz",
            "droppable_channels": list(spec.droppable_channels),
            "name": spec.name,
            "description": "nnunet-ext synthetic multi-center clot cohort (center C: SWI in the SWAN slot, no PHASE: "
                           "zero image); lesion labels in labelsTr_lesion / labelsTs_lesion",
        }
        write_json(os.path.join(staging, "dataset.json"), dataset_json)
        write_json(os.path.join(staging, "case_centers.json"), {case: center for case, center, _ in plan})
        write_json(os.path.join(staging, OCCLUSION_FILE), occlusions)
        write_json(os.path.join(staging, "cohort.json"), {
            "kind": "clot", "spec": asdict(spec), "centers": [asdict(profiles[c]) for c in spec.centers],
            "preset": asdict(preset),
            "splits": {case: split for case, _, split in plan}, "provenance": provenance(seed=spec.seed)})
    return final
