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
"""
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import ndimage

from nnunet_ext.data.nifti import write_image
from nnunet_ext.data.staging import staged_dataset_folder, write_json
from nnunet_ext.data.synthetic_cohort import _blob, _ellipsoid, case_plan, check_cohort_spec, head_geometry
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


CLOT_CENTERS: Tuple[ClotCenterProfile, ...] = (
    ClotCenterProfile("A", (2.0, 0.9, 0.9), (1.0, 1.0, 1.0), "SWAN", 0.04, 0.05),
    ClotCenterProfile("B", (1.6, 1.0, 1.0), (1.4, 0.8, 1.3), "SWAN", 0.06, 0.10),
    ClotCenterProfile("C", (1.8, 0.8, 0.8), (0.9, 1.2, 0.0), "SWI", 0.05, 0.08),  # SWI, no PHASE
)

# (DWI, SWAN, PHASE) of each tissue class; DWI and SWAN relative to normal tissue = 1, PHASE signed
_CSF = (0.3, 1.35, 0.0)
_LESION = (2.4, 1.05, 0.0)
_ARTERY = (1.0, 1.2, 0.0)        # flowing blood: not dark in SWAN
_CLOT = (1.05, 0.25, 1.0)        # susceptibility vessel sign, paramagnetic
_VEIN = (0.95, 0.3, 0.8)         # deoxyhaemoglobin: dark and paramagnetic, but tubular
_CALCIFICATION = (0.8, 0.25, -1.0)  # dark, diamagnetic


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

    def __post_init__(self):
        check_cohort_spec(self, [c.name for c in CLOT_CENTERS], CHANNELS)
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


def _arterial_tree(middle: np.ndarray, size: float, side: int, rng: np.random.Generator) -> Dict[str, List]:
    """One hemisphere's middle-cerebral-like tree: a trunk (M1) and two branches (M2), points in mm (z, y, x)."""
    def point(z, y, x):
        return middle + np.array([z, y, side * x]) * size + rng.normal(0, 0.015 * size, 3)
    root, bifurcation = point(-0.10, 0.05, 0.04), point(-0.08, 0.06, 0.24)
    return {"M1": [root, bifurcation],
            "M2 superior": [bifurcation, point(0.10, 0.12, 0.30), point(0.26, 0.10, 0.24)],
            "M2 inferior": [bifurcation, point(-0.02, -0.12, 0.31), point(0.10, -0.26, 0.22)]}


def generate_clot_case(center: ClotCenterProfile, size: int, rng: np.random.Generator,
                       proximal_fraction: float = 0.5) -> ClotCase:
    spacing = np.array(center.spacing_zyx)
    shape, coords, middle, brain, ventricles = head_geometry(spacing, size, rng, 0.5, (0.40, 0.44, 0.40), 0.05)

    vessel_radius = max(1.0, 0.03 * size)
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
    clot_length = min(0.8 * length, rng.uniform(0.12, 0.2) * size)
    centre = rng.uniform(0.5 * clot_length, length - 0.5 * clot_length) / length
    unit = (end - start) / length
    clot_start = start + unit * (centre * length - 0.5 * clot_length)
    clot_end = start + unit * (centre * length + 0.5 * clot_length)
    clot_radius = 1.3 * vessel_radius  # blooming: the dark signal is wider than the lumen
    clot = (segment_distance(coords, clot_start, clot_end) <= clot_radius) & brain
    if clot.sum() < 3:  # a coarse grid can miss a thin clot: keep the voxel nearest its centre at least
        nearest = np.argmin(segment_distance(coords, clot_start, clot_end))
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
    lesion &= segment_distance(coords, clot_start, clot_end) > clot_radius + 0.05 * size

    # mimics: veins (long, dark, paramagnetic) and calcifications (small, dark, diamagnetic)
    veins = polyline_distance(coords, [middle + np.array([0.30, -0.28, 0.0]) * size,
                                       middle + np.array([0.36, 0.0, 0.0]) * size,
                                       middle + np.array([0.30, 0.28, 0.0]) * size]) <= 1.2 * vessel_radius
    for _ in range(int(rng.integers(1, 4))):
        direction = rng.normal(0, 1, 3)
        direction /= np.linalg.norm(direction)
        anchor = middle + rng.normal(0, 1, 3) * np.array([0.12, 0.16, 0.14]) * size
        half = direction * rng.uniform(0.18, 0.25) * size
        veins |= segment_distance(coords, anchor - half, anchor + half) <= rng.uniform(1.0, 1.3) * vessel_radius
    veins &= brain & ~clot
    depth = ndimage.distance_transform_edt(brain & ~ventricles, sampling=spacing)
    candidates = np.argwhere(depth > 0.08 * size)
    calcifications = np.zeros(shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        voxel = candidates[rng.integers(len(candidates))]
        calcifications |= _blob(coords, np.array([coords[a][tuple(voxel)] for a in range(3)]),
                                rng.uniform(0.03, 0.05) * size, rng)
    calcifications &= brain & ~clot & ~veins

    texture = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=2.0 / spacing)
    texture = 1.0 + 0.08 * texture / (texture.std() + 1e-8)
    partial_volume = 0.5 / spacing
    blooming = 0.8 / spacing  # susceptibility sources look larger in SWAN and PHASE than they are
    layers = ((ventricles, _CSF), (lesion, _LESION), (arteries & ~clot, _ARTERY), (veins, _VEIN),
              (calcifications, _CALCIFICATION), (clot, _CLOT))
    tissue = []
    for c in range(3):
        intensity = np.full(shape, 0.0 if c == 2 else 1.0)
        for mask, values in layers:
            weight = ndimage.gaussian_filter(mask.astype(float), partial_volume if c == 0 else blooming)
            intensity = intensity * (1 - weight) + values[c] * rng.uniform(0.92, 1.08) * weight
        tissue.append(intensity * texture if c < 2 else intensity)
    background_phase = ndimage.gaussian_filter(rng.normal(0, 1, shape), sigma=8.0 / spacing)
    tissue[2] = tissue[2] + 0.1 * background_phase / (background_phase.std() + 1e-8)

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
        noise = rng.normal(0, center.noise_std * max(gain, 1e-3), shape)
        if c < 2:
            scanned = np.clip(gain * image * bias + noise, 0, None)
        else:
            scanned = gain * image + noise  # signed
        images.append((scanned * brain).astype(np.float32))
    occlusion = {"occlusion": "proximal" if proximal else "distal", "vessel": vessel,
                 "hemisphere": "+x" if side > 0 else "-x"}
    return ClotCase(images, clot.astype(np.uint8), lesion.astype(np.uint8), occlusion)


def write_clot_cohort(spec: ClotCohortSpec, raw_root: str, overwrite: bool = False, progress: bool = True) -> str:
    """Write the clot cohort to `raw_root/DatasetXXX_Name` atomically (as `write_cohort`); returns that folder."""
    final = os.path.join(raw_root, spec.folder_name)
    with staged_dataset_folder(raw_root, spec.folder_name, overwrite) as staging:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", *LESION_LABEL_FOLDERS.values()):
            os.makedirs(os.path.join(staging, sub))
        profiles = {c.name: c for c in CLOT_CENTERS}
        plan = case_plan(spec, prefix="clot")
        occlusions = {}
        for number, (case_id, center_name, split) in enumerate(plan):
            # one independent stream per case: a case does not change when others are added
            rng = np.random.default_rng([spec.seed, spec.dataset_id, number])
            center = profiles[center_name]
            case = generate_clot_case(center, spec.size, rng, spec.proximal_fraction)
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
            "splits": {case: split for case, _, split in plan}, "provenance": provenance(seed=spec.seed)})
    return final
