"""The clot cohort's settings: its centers (spacing, gains, noise, SWAN or SWI) and its presets (`easy`, `hard`),
every generation parameter in one frozen ClotPreset; clot_cohort.py draws and renders the cases from them."""
from dataclasses import dataclass
from typing import Dict, Tuple

CHANNELS = ("DWI", "SWAN", "PHASE")


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
