"""What the thrombus experiments of Tables 5-7 run on: the setting's constants and the profiles (cohort, budget,
runs).

The paper's setting (section 5.2-5.3): train on CHSF + MATAR (GE sites: SWAN and PHASE), test on their test
cases; FOCH (no PHASE, often SWI instead of SWAN) is test-only. On the synthetic clot cohort: centers A + B are
trained on and tested, center C (SWI in the SWAN slot, a black PHASE) is only tested. Every row is
`profile.runs` runs (run k: fold k-1, seed profile.seed + k-1) reported as mean ± std across runs.
"""
import json
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Dict, Mapping, Tuple

import numpy as np

from nnunet_ext.data.clot_presets import CLOT_PRESETS, clot_preset
from nnunet_ext.training.variants import variant_name

CHANNELS = ("DWI", "SWAN", "PHASE")
TRAIN_CENTERS = ("A", "B")
UNSEEN_CENTER = "C"
DROPPABLE = "PHASE"
# dataset ids inside a harness workdir (the stroke tables use 510-513)
SOURCE_ID, CLOT_ID, LESION_ID = 530, 531, 532
DATASET_NAMES = {SOURCE_ID: "SyntheticClotSource", CLOT_ID: "ClotTrainAB", LESION_ID: "ClotLesionAB"}
TEST_SETS = {"AB": TRAIN_CENTERS, "C": (UNSEEN_CENTER,)}
TEST_SET_LABELS = {"AB": "A+B", "C": "C (SWI, no PHASE)"}
RECURRENT_MODELS = ("CLSTM", "LLSTM", "AttCLSTM", "AttLLSTM", "UpAttLLSTM")
NNUNET = "nnU-Net"
GRADUAL = "UpAttLLSTMGradualDrop"
TABLE_MODELS: Dict[int, Tuple[str, ...]] = {5: ("AttLLSTM",), 6: (NNUNET,) + RECURRENT_MODELS,
                                            7: ("UpAttLLSTM", GRADUAL)}
# clot_augmentation -> the clot trainers' families (without, with gradual dropout of PHASE)
CLOT_AUGMENTATIONS: Dict[str, Tuple[str, str]] = {"paper": ("UpAttLLSTM", "UpAttLLSTMGradualDrop"),
                                                  "inplane": ("UpAttLLSTMSpatialDA", "UpAttLLSTMSpatialDAGradualDrop")}
# post-processing columns of the paper -> step of nnunet_ext.postprocessing.clot
STEPS = {"Lesion": "lesion_distance", "Thr": "threshold", "Big": "largest"}
THRESHOLD = 0.3           # Table 4: th
PAPER_DISTANCE_PX = 20    # Table 4: d, pixels of the paper's 256-pixel crops
PAPER_CROP_PX = 256
PAPER_MIN_SIZE_PX = 20    # Table 4: n_min, pixels
PAPER_PIXEL_MM = 0.45     # the paper's susceptibility in-plane pixel: 512 x 512 over a head (section 3, Table 1)
MIN_SIZE = "Min"          # the min-size step: first in every post-processed chain (not a column of Tables 6-7)
# Every model of the tables predicts (and the fine-tune starts) from nnU-Net's checkpoint_best.pth: the epoch of the
# best moving average of the validation pseudo Dice (nnU-Net saves it during training). Chosen on the validation
# split (pilots/clot_training): UpAttLLSTM's validation pseudo Dice peaks early (~0.6 around epoch 60-110) and then
# decays towards 0 while its training loss keeps falling: mostly the network learning to reject the one validation
# clot, the widest of the 16, as wide as the cohort's veins (pilots/up_spatial_da; on 4 validation cases the fall is
# a third: pilots/up_validation_split); the paper fine-tunes "the best UpAttLLSTM".
# One rule for every row, nnU-Net and the lesion model included.
PREDICTION_CHECKPOINT = "checkpoint_best.pth"


# ---- profiles -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClotProfile:
    name: str
    train_per_center: int             # cohort; center C's training cases are generated but never trained on
    test_per_center: int
    size: int                         # cohort field of view (mm)
    epochs: int                       # spelled in the trainer names with the iterations (_400epochs_16it_2valit)
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    slices: Tuple[Tuple[int, int], ...]  # (our slice count, the paper's it stands for); paper 12 = the default
    template: str = "upattllstm_cpu"  # size template of the clot networks (nnunet_ext/planning/templates)
    lesion_source: str = "model"      # 'model': a stock nnU-Net lesion model; 'reference': the true lesion (oracle)
    gradual_init: str = "pretrained"  # 'pretrained': fine-tune UpAttLLSTM (the paper's best); 'scratch'
    device: str = "cpu"
    seed: int = 0
    preset: str = "easy"              # clot cohort preset (nnunet_ext.data.clot_presets.CLOT_PRESETS)
    runs: int = 1                     # runs per row: run k trains fold k-1 with seed `seed` + k-1
    # augmentation of the clot networks: 'paper' (flips and noise) or 'inplane' (nnU-Net's in-plane rotation and
    # scaling before them: the UpAttLLSTMSpatialDA trainers); the 3D nnU-Net rows keep nnU-Net's own
    clot_augmentation: str = "paper"
    # cases of the training centers validated on (nnU-Net's pseudo Dice and checkpoint_best.pth); the rest trained
    # on. 1 keeps the most for training but lets one clot decide the checkpoint (pilots/up_validation_split)
    validation_cases: int = 1

    def __post_init__(self):
        if self.preset not in CLOT_PRESETS:
            raise ValueError(f"unknown clot cohort preset {self.preset!r}; presets: {', '.join(CLOT_PRESETS)}")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"runs must be a whole number >= 1, got {self.runs!r}")
        if self.lesion_source not in ("model", "reference"):
            raise ValueError(f"lesion_source must be 'model' or 'reference', got {self.lesion_source!r}")
        if self.gradual_init not in ("pretrained", "scratch"):
            raise ValueError(f"gradual_init must be 'pretrained' or 'scratch', got {self.gradual_init!r}")
        if self.clot_augmentation not in CLOT_AUGMENTATIONS:
            raise ValueError(f"clot_augmentation must be one of {', '.join(CLOT_AUGMENTATIONS)}, got "
                             f"{self.clot_augmentation!r}")
        if not isinstance(self.validation_cases, int) or self.validation_cases < 1:
            raise ValueError(f"validation_cases must be a whole number >= 1, got {self.validation_cases!r}")
        if [paper for _, paper in self.slices].count(12) != 1:
            raise ValueError(f"exactly one slice count must stand for the paper's 12, got {self.slices}")

    @property
    def default_slices(self) -> int:
        """The slice count of Tables 6 and 7 (the paper uses 12, Table 5's best)."""
        return next(ours for ours, paper in self.slices if paper == 12)

    @property
    def lesion_distance_mm(self) -> float:
        """d = 20 pixels of a 256-pixel crop that spans most of the brain, scaled to the cohort's field of view."""
        return round(self.size * PAPER_DISTANCE_PX / PAPER_CROP_PX, 2)

    @property
    def training_pixel_area_mm2(self) -> float:
        """Mean in-plane pixel area of the training centers' images (the grid the predictions are post-processed
        on)."""
        centers = {c.name: c for c in clot_preset(self.preset).centers}
        return float(np.mean([centers[n].spacing_zyx[1] * centers[n].spacing_zyx[2] for n in TRAIN_CENTERS]))

    @property
    def min_size_voxels(self) -> int:
        """n_min = 20 pixels of ~0.45 mm (4.05 mm^2 of in-plane area), scaled by area to the cohort's in-plane
        pixel: round(20 x 0.45^2 / mean pixel area of the training centers), at least 1. By area, not volume: the
        paper counts pixels and does not state its slice thickness."""
        return max(1, int(round(PAPER_MIN_SIZE_PX * PAPER_PIXEL_MM ** 2 / self.training_pixel_area_mm2)))

    def trainer(self, family: str) -> str:
        """The trainer of `family` with this profile's budget (epochs, iterations per epoch) in its name."""
        return variant_name(family, None, self.epochs, self.iterations_per_epoch, self.val_iterations_per_epoch)

    def clot_trainer(self, gradual_dropout: bool) -> str:
        """The trainer of a clot network with this profile's augmentation and budget."""
        return self.trainer(CLOT_AUGMENTATIONS[self.clot_augmentation][gradual_dropout])


def same_profile(stored: Mapping, profile: ClotProfile) -> bool:
    """Whether a workdir's stored profile (JSON) is `profile`. A field the stored one lacks was added to ClotProfile
    after that workdir was made; it counts as its default, which keeps what the profiles did before the field
    existed (e.g. clot_augmentation 'paper')."""
    defaults = {f.name: f.default for f in fields(ClotProfile) if f.default is not MISSING}
    completed = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
    return completed == json.loads(json.dumps(asdict(profile)))


CLOT_PROFILES: Dict[str, ClotProfile] = {
    # 2 CPU cores, Tables 5-7 together in 78 min per run (measured, one run): 10 trainings of 100 epochs x 16
    # iterations (1,600; at 8 x 60 = 480 only UpAttLLSTM and AttCLSTM left the empty prediction, the others were
    # still on its plateau), 14 predictions, 2 preprocessings (docs/reproducing.md). The CPU template's patch has 8 slices where
    # the paper's has 12, so 10/12/14 become 6/8/10 (x 2/3). Seed 3: its A+B test cases are 6 proximal / 6 distal
    # (seed 0: 10 / 2).
    "quick": ClotProfile("quick", 8, 6, 48, 100, 16, 2, ((6, 10), (8, 12), (10, 14)), seed=3, runs=3),
    # the quick budget on the cohort that poses the paper's problem (benchmarks/results/clot_cohort_hard.md)
    "quick_hard": ClotProfile("quick_hard", 8, 6, 48, 100, 16, 2, ((6, 10), (8, 12), (10, 14)), seed=3,
                              preset="hard", runs=3),
    # the same on a 4x longer schedule, for every model alike. Why (benchmarks/results/README.md, "hard preset:
    # the budget"): at quick_hard's 1,600 iterations nnU-Net, CLSTM and LLSTM all predicted no clot in any test
    # case (run 1); a pilot of nnU-Net alone at 400 epochs x 16 left the empty plateau at epoch 40 and reached a
    # pseudo Dice of ~0.6 by epoch 130. About 5 h per run of Tables 5-7 on 2 CPU cores: run it resumable, or with
    # --executor slurm on a cluster.
    "quick_hard_400": ClotProfile("quick_hard_400", 8, 6, 48, 400, 16, 2, ((6, 10), (8, 12), (10, 14)), seed=3,
                                  preset="hard", runs=3),
    # the tests' profile: every code path, one epoch of two iterations, two runs (so that runs are aggregated)
    "ci": ClotProfile("ci", 3, 2, 32, 1, 2, 1, ((6, 10), (8, 12)), runs=2),
}
