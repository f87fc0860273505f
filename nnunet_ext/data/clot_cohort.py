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

Presets (clot_presets.CLOT_PRESETS; ClotCohortSpec.preset): every generation parameter lives in one frozen ClotPreset.
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

from nnunet_ext.data.clot_presets import _EASY, CHANNELS, CLOT_CENTERS, ClotCenterProfile, ClotPreset, clot_preset
from nnunet_ext.data.clot_geometry import _count, _draw, acquire, polyline_distance, segment_distance
from nnunet_ext.data.nifti import write_image
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.data.synthetic_cohort import _blob, case_plan, check_cohort_spec, head_geometry
from nnunet_ext.provenance import provenance

LESION_LABEL_FOLDERS = {"Tr": "labelsTr_lesion", "Ts": "labelsTs_lesion"}
OCCLUSION_FILE = "occlusions.json"


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


@dataclass(frozen=True)
class _Occlusion:
    side: int                # the hemisphere: -1 or +1 along x
    proximal: bool
    vessel: str              # 'M1', 'M2 superior' or 'M2 inferior'
    segment: int             # the occluded segment of that vessel's polyline
    clot_end: np.ndarray     # the downstream end of the clot
    clot_radius: float
    clot_distance: np.ndarray  # distance of every voxel to the clot's axis
    clot: np.ndarray         # the clot mask


def _occlusion(tree: Dict[str, List], side: int, coords, spacing: np.ndarray, size: int, vessel_radius: float,
               brain: np.ndarray, proximal_fraction: float, preset: ClotPreset, rng: np.random.Generator
               ) -> _Occlusion:
    """A short clot in one segment of one arterial tree; everything after it is downstream."""
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
    return _Occlusion(side, proximal, vessel, segment, clot_end, clot_radius, clot_distance, clot)


def _infarct(occlusion: _Occlusion, tree: Dict[str, List], coords, spacing: np.ndarray, size: int, middle,
             brain: np.ndarray, ventricles: np.ndarray, rng: np.random.Generator
             ) -> Tuple[np.ndarray, np.ndarray, float]:
    """(lesion, distance to the downstream branches, territory radius): the infarct lies downstream of the clot,
    in its hemisphere, not around the clot itself."""
    downstream = [[occlusion.clot_end] + tree[occlusion.vessel][occlusion.segment + 1:]]
    if occlusion.proximal:
        downstream += [tree["M2 superior"], tree["M2 inferior"]]
    # each branch feeds the cortex beyond its last point too
    downstream = [points + [points[-1] + 0.08 * size * (points[-1] - points[-2]) /
                            max(float(np.linalg.norm(points[-1] - points[-2])), 1e-6)] for points in downstream]
    territory = np.minimum.reduce([polyline_distance(coords, points) for points in downstream])
    radius = (0.14 if occlusion.proximal else 0.11) * size
    wobble = ndimage.gaussian_filter(rng.normal(0, 1, brain.shape), sigma=3.0 / spacing)
    wobble /= wobble.std() + 1e-8
    hemisphere = (coords[2] - middle[2]) * occlusion.side > 0
    lesion = (territory <= radius * (1 + 0.2 * wobble)) & brain & ~ventricles & hemisphere
    lesion &= occlusion.clot_distance > occlusion.clot_radius + 0.05 * size
    return lesion, territory, radius


def _mimics(preset: ClotPreset, coords, spacing: np.ndarray, size: int, middle, vessel_radius: float, trees,
            brain: np.ndarray, ventricles: np.ndarray, clot: np.ndarray, near_clot: np.ndarray,
            territory: np.ndarray, territory_radius: float, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """Veins (long, dark, paramagnetic), calcifications (small, dark, diamagnetic) and the slice mimics; the
    slice mimics keep clear of the clot (`near_clot`) and of its downstream territory, where only the clot explains
    the lesion.

    Kept as the committed cohorts were generated: where veins are drawn, the territory kept clear is that within
    the last vein's radius (not `territory_radius`) of the downstream branches (a reused variable in the first
    version of this generator). Changing it would change every cohort the committed tables were computed on."""
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
        territory_radius = radius
    veins &= brain & ~clot
    depth = ndimage.distance_transform_edt(brain & ~ventricles, sampling=spacing)
    candidates = np.argwhere(depth > 0.08 * size)
    calcifications = np.zeros(brain.shape, bool)
    for _ in range(_count(rng, preset.calcifications)):
        voxel = candidates[rng.integers(len(candidates))]
        calcifications |= _blob(coords, np.array([coords[a][tuple(voxel)] for a in range(3)]),
                                _draw(rng, preset.calcification_radius) * size, rng)
    calcifications &= brain & ~clot & ~veins
    avoid = ~brain | near_clot | (territory <= territory_radius)
    oblique, single = _slice_mimics(preset, coords, spacing, size, vessel_radius, trees, candidates, avoid, rng)
    return {"veins": veins, "calcifications": calcifications, "oblique_veins": oblique, "slice_mimics": single}


def _tissue_images(layers, shape, spacing: np.ndarray, preset: ClotPreset, rng: np.random.Generator
                   ) -> List[np.ndarray]:
    """DWI, SWAN and PHASE of the tissue `layers` ((mask, per-channel values), painted in order) before the
    scanner: texture, partial volume in DWI, blooming of susceptibility sources in SWAN and PHASE."""
    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=2.0 / spacing)
    texture = 1.0 + preset.texture * texture / (texture.std() + 1e-8)
    partial_volume = preset.partial_volume_mm / spacing
    blooming = preset.blooming_mm / spacing  # susceptibility sources look larger in SWAN and PHASE than they are
    tissue = []
    for c in range(3):
        intensity = np.full(shape, 0.0 if c == 2 else 1.0)
        for mask, values in layers:
            weight = ndimage.gaussian_filter(mask.astype(float), partial_volume if c == 0 else blooming)
            intensity = intensity * (1 - weight) + values[c] * rng.uniform(*preset.tissue_jitter) * weight
        tissue.append(intensity * texture if c < 2 else intensity)
    background_phase = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=8.0 / spacing)
    tissue[2] = tissue[2] + preset.background_phase * background_phase / (background_phase.std() + 1e-8)
    return tissue


def _scan(tissue: List[np.ndarray], center: ClotCenterProfile, coords, middle, size: int, brain: np.ndarray,
          preset: ClotPreset, rng: np.random.Generator) -> List[np.ndarray]:
    """The center's scanner: a linear bias field, SWI instead of SWAN where the center has it (its phase then
    gone), gains, acquisition at the preset's resolution with noise, the brain mask."""
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
            images.append(np.zeros(brain.shape, np.float32))
            continue
        noise_std = center.noise_std * max(gain, 1e-3)
        if c < 2:
            scanned = np.clip(acquire(gain * image * bias, preset.acquisition_factor[c], noise_std, rng), 0, None)
        else:
            scanned = acquire(gain * image, preset.acquisition_factor[c], noise_std, rng)  # signed
        images.append((scanned * brain).astype(np.float32))
    return images


def generate_clot_case(center: ClotCenterProfile, size: int, rng: np.random.Generator,
                       proximal_fraction: float = 0.5, preset: ClotPreset = _EASY) -> ClotCase:
    """One case of `preset` at `center` (one of preset.centers). The steps draw from `rng` in a fixed order; the
    settings of 'easy' draw exactly what the original cohort drew, so its cases are unchanged."""
    tissues = preset.tissues
    spacing = np.array(center.spacing_zyx)
    shape, coords, middle, brain, ventricles = head_geometry(spacing, size, rng, 0.5, (0.40, 0.44, 0.40), 0.05)
    vessel_radius = max(preset.vessel_radius_min_mm, preset.vessel_radius * size)
    trees = {side: _arterial_tree(middle, size, side, rng) for side in (-1, 1)}
    arteries = np.zeros(shape, bool)
    for tree in trees.values():
        for points in tree.values():
            arteries |= polyline_distance(coords, points) <= vessel_radius
    side = int(rng.choice([-1, 1]))
    occlusion = _occlusion(trees[side], side, coords, spacing, size, vessel_radius, brain, proximal_fraction, preset,
                           rng)
    clot = occlusion.clot
    lesion, territory, radius = _infarct(occlusion, trees[side], coords, spacing, size, middle, brain, ventricles, rng)
    near_clot = occlusion.clot_distance <= occlusion.clot_radius + 0.1 * size
    mimics = _mimics(preset, coords, spacing, size, middle, vessel_radius, trees, brain, ventricles, clot, near_clot,
                     territory, radius, rng)
    layers = ((ventricles, tissues.csf), (lesion, tissues.lesion), (arteries & ~clot, tissues.artery),
              (mimics["veins"] | mimics["oblique_veins"] | mimics["slice_mimics"], tissues.vein),
              (mimics["calcifications"], tissues.calcification), (clot, tissues.clot))
    images = _scan(_tissue_images(layers, shape, spacing, preset, rng), center, coords, middle, size, brain, preset,
                   rng)
    record = {"occlusion": "proximal" if occlusion.proximal else "distal", "vessel": occlusion.vessel,
              "hemisphere": "+x" if side > 0 else "-x"}
    return ClotCase(images, clot.astype(np.uint8), lesion.astype(np.uint8), record,
                    {"arteries": arteries & ~clot, **mimics})


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
