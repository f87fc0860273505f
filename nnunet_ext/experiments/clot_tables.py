"""What the thrombus experiments of Tables 5-7 are: networks, table rows, profiles, the paper's numbers, the report.

The paper's setting (section 5.2-5.3): train on CHSF + MATAR (GE sites: SWAN and PHASE), test on their test
cases; FOCH (no PHASE, often SWI instead of SWAN) is test-only. On the synthetic clot cohort: centers A + B are
trained on and tested, center C (SWI in the SWAN slot, a black PHASE) is only tested.
  * Table 5: AttLLSTM with several slice counts (the paper: 10, 12, 14; here scaled to the CPU patch, see
    ClotProfile.slices).
  * Table 6: nnU-Net (3d_fullres, CPU plans) against CLSTM, LLSTM, AttCLSTM, AttLLSTM and UpAttLLSTM, without
    post-processing, then +Lesion and +Lesion+Thr (nnU-Net, AttCLSTM, AttLLSTM) and +Big (UpAttLLSTM).
  * Table 7: UpAttLLSTM against UpAttLLSTMGradualDrop (PHASE, drop probability 0.5) on A + B with PHASE present
    and absent (zero image), and on C; each without and with Big.
Every row is split by occlusion: proximal (P) and distal (D), from the cohort's occlusions.json. Every row is
`profile.runs` runs (run k: fold k-1, seed profile.seed + k-1) reported as mean ± std across runs; rows are
compared only where their means differ by more than the sum of their run-to-run stds (report.verdict).
"""
import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from nnunet_ext.data.clot_cohort import CLOT_PRESETS, clot_preset
from nnunet_ext.experiments.records import write_table_files
from nnunet_ext.experiments.report import verdict

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
# decays towards 0 while its training loss keeps falling (over-fitting 15 training cases); the paper fine-tunes "the
# best UpAttLLSTM". One rule for every row, nnU-Net and the lesion model included.
PREDICTION_CHECKPOINT = "checkpoint_best.pth"


# ---- profiles -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClotProfile:
    name: str
    train_per_center: int             # cohort; center C's training cases are generated but never trained on
    test_per_center: int
    size: int                         # cohort field of view (mm)
    epochs: int                       # must be a listed trainer variant (1, 8, 100, 400, 1000)
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    slices: Tuple[Tuple[int, int], ...]  # (our slice count, the paper's it stands for); paper 12 = the default
    template: str = "upattllstm_cpu"  # size template of the clot networks (nnunet_ext/planning/templates)
    lesion_source: str = "model"      # 'model': a stock nnU-Net lesion model; 'reference': the true lesion (oracle)
    gradual_init: str = "pretrained"  # 'pretrained': fine-tune UpAttLLSTM (the paper's best); 'scratch'
    device: str = "cpu"
    seed: int = 0
    preset: str = "easy"              # clot cohort preset (nnunet_ext.data.clot_cohort.CLOT_PRESETS)
    runs: int = 1                     # runs per row: run k trains fold k-1 with seed `seed` + k-1

    def __post_init__(self):
        if self.preset not in CLOT_PRESETS:
            raise ValueError(f"unknown clot cohort preset {self.preset!r}; presets: {', '.join(CLOT_PRESETS)}")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ValueError(f"runs must be a whole number >= 1, got {self.runs!r}")
        if self.lesion_source not in ("model", "reference"):
            raise ValueError(f"lesion_source must be 'model' or 'reference', got {self.lesion_source!r}")
        if self.gradual_init not in ("pretrained", "scratch"):
            raise ValueError(f"gradual_init must be 'pretrained' or 'scratch', got {self.gradual_init!r}")
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

    def trainer_suffix(self) -> str:
        return "" if self.epochs == 1000 else f"_{self.epochs}epochs"


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


# ---- networks and rows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """One trained model: an architecture on the clot labels (or nnU-Net on the lesion labels)."""
    architecture: str                 # 'nnU-Net', a clot model, or GRADUAL
    slices: Optional[int] = None      # recurrent models: patch slices
    target: str = "clot"              # 'clot' or 'lesion'

    @property
    def key(self) -> str:
        if self.target == "lesion":
            return "lesion_nnunet"
        return "nnunet" if self.architecture == NNUNET else f"{self.architecture}_s{self.slices}"

    @property
    def dataset_id(self) -> int:
        return LESION_ID if self.target == "lesion" else CLOT_ID

    @property
    def dataset_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{DATASET_NAMES[self.dataset_id]}"

    @property
    def plans(self) -> str:
        if self.architecture == NNUNET:
            return "nnUNetPlans_CPU"
        model = "UpAttLLSTM" if self.architecture == GRADUAL else self.architecture
        return f"nnUNetPlans_{model}_s{self.slices}"

    def trainer(self, profile: ClotProfile) -> str:
        family = {NNUNET: "NoDropout", GRADUAL: "UpAttLLSTMGradualDrop"}.get(self.architecture, "UpAttLLSTM")
        return f"nnUNetTrainer{family}{profile.trainer_suffix()}"

    def pretrained_from(self, profile: ClotProfile) -> Optional["Network"]:
        """The network whose final weights this one starts from (the paper's fine-tune), if any."""
        if self.architecture == GRADUAL and profile.gradual_init == "pretrained":
            return Network("UpAttLLSTM", self.slices)
        return None


LESION_NETWORK = Network(NNUNET, target="lesion")


@dataclass(frozen=True)
class PaperRow:
    """The paper's Dice and detection rate for a row (P, D); FOCH rows give one value for all cases."""
    source: str
    dice: Tuple[Optional[float], Optional[float]] = (None, None)
    det: Tuple[Optional[float], Optional[float]] = (None, None)
    dice_all: Optional[float] = None
    det_all: Optional[float] = None
    uncertain: str = ""   # why the value or the mapping is uncertain; empty: read off the table as is


@dataclass(frozen=True)
class Row:
    network: Network
    test_set: str                     # 'AB' or 'C'
    phase: str                        # 'present' or 'missing' (zero image)
    chain: Tuple[str, ...] = ()       # paper post-processing columns, in order: Lesion, Thr, Big
    lesion_source: str = "model"      # only matters with 'Lesion' in the chain
    paper: Optional[PaperRow] = None
    note: str = ""

    @property
    def key(self) -> str:
        """Shared by every table that has the same row, so its result is computed once."""
        chain = "+".join(self.chain) or "raw"
        if "Lesion" in self.chain and self.lesion_source == "reference":
            chain += "_oracle"
        return f"{self.network.key}__{self.test_set}_{self.phase}__{chain}"

    @property
    def postprocessing(self) -> str:
        """The steps in order: the min-size step first in every post-processed chain ('-': raw)."""
        text = "+".join((MIN_SIZE,) + self.chain) if self.chain else "-"
        return text + (" (reference lesion, oracle)" if "Lesion" in self.chain and
                       self.lesion_source == "reference" else "")


# ---- the paper's numbers (Dice and Det. columns of Tables 5-7) --------------------------------------------------

PAPER_TABLE5: Dict[int, PaperRow] = {
    10: PaperRow("Table 5, 10 slices", (0.48, 0.51), (0.9, 0.91)),
    12: PaperRow("Table 5, 12 slices", (0.55, 0.54), (1.0, 0.91)),
    14: PaperRow("Table 5, 14 slices", (0.59, 0.42), (1.0, 0.85)),
}
_MATAR2 = "the paper trained UpAttLLSTM on CHSF+MATAR+MATAR2"
PAPER_TABLE6: Dict[Tuple[str, Tuple[str, ...]], PaperRow] = {
    (NNUNET, ()): PaperRow("Table 6, nnUnet", (0.46, 0.45), (0.7, 0.7)),
    ("CLSTM", ()): PaperRow("Table 6, CLSTM", (0.39, 0.33), (1.0, 0.81)),
    ("LLSTM", ()): PaperRow("Table 6, LLSTM", (0.48, 0.36), (1.0, 0.64)),
    ("AttCLSTM", ()): PaperRow("Table 6, AttCLSTM", (0.41, 0.38), (0.9, 0.72)),
    ("AttLLSTM", ()): PaperRow("Table 6, AttLLSTM CHSF+MATAR", (0.55, 0.54), (1.0, 0.91)),
    ("UpAttLLSTM", ()): PaperRow("Table 6, UpAttLLSTM", (0.62, 0.58), (1.00, 0.93), uncertain=_MATAR2),
    (NNUNET, ("Lesion",)): PaperRow("Table 6, nnUnet +Lesion", (0.48, 0.51), (0.7, 0.7)),
    ("AttCLSTM", ("Lesion",)): PaperRow("Table 6, AttCLSTM +Lesion", (0.43, 0.36), (0.9, 0.6)),
    ("AttLLSTM", ("Lesion",)): PaperRow("Table 6, AttLLSTM +Lesion", (0.52, 0.58), (1.0, 0.91)),
    (NNUNET, ("Lesion", "Thr")): PaperRow("Table 6, nnUnet +Lesion+Thr", (0.49, 0.51), (0.7, 0.7)),
    ("AttCLSTM", ("Lesion", "Thr")): PaperRow("Table 6, AttCLSTM +Lesion+Thr", (0.54, 0.32), (0.9, 0.6)),
    ("AttLLSTM", ("Lesion", "Thr")): PaperRow("Table 6, AttLLSTM +Lesion+Thr", (0.63, 0.59), (1.0, 0.91)),
    ("UpAttLLSTM", ("Big",)): PaperRow("Table 6, UpAttLLSTM +Big", (0.65, 0.65), (1.00, 0.86),
                                       uncertain=_MATAR2 + "; the check mark's column was lost, Big per the prose "
                                                           "and Table 7 row 2"),
}
# Table 7's check-mark columns (Grad. mod. drop., Pretrained, Big, PHASE) were lost in the text copy. Rows 1-2
# repeat Table 6's UpAttLLSTM rows (certain); the others are mapped from the prose. Key: (network, gradual_init,
# test set, PHASE, Big). FOCH (SWI) stands for center C; the paper does not split FOCH by occlusion.
_LOST = "Table 7's check-mark columns were lost; mapped from the prose"
PAPER_TABLE7: Dict[Tuple[str, Optional[str], str, str, bool], PaperRow] = {
    ("UpAttLLSTM", None, "AB", "present", False): PaperRow("Table 7 row 1", (0.62, 0.58), (1.00, 0.93)),
    ("UpAttLLSTM", None, "AB", "present", True): PaperRow("Table 7 row 2", (0.65, 0.65), (1.00, 0.86)),
    ("UpAttLLSTM", None, "AB", "missing", False): PaperRow(
        "Table 7 row 3", (0.24, 0.29), (0.8, 0.57), uncertain=_LOST + " ('Dice lower than 0.30' without PHASE)"),
    ("UpAttLLSTM", None, "C", "present", False): PaperRow(
        "Table 7 row 13, FOCH (SWI)", dice_all=0.04, det_all=0.32,
        uncertain=_LOST + " ('detection rate lower than 40 %' on FOCH without any method)"),
    (GRADUAL, "pretrained", "AB", "present", False): PaperRow("Table 7 row 9", (0.54, 0.49), (1.00, 0.92),
                                                              uncertain=_LOST),
    (GRADUAL, "pretrained", "AB", "present", True): PaperRow("Table 7 row 10", (0.60, 0.57), (1.00, 0.79),
                                                             uncertain=_LOST),
    (GRADUAL, "pretrained", "AB", "missing", False): PaperRow("Table 7 row 11", (0.45, 0.41), (1.00, 0.86),
                                                              uncertain=_LOST),
    (GRADUAL, "pretrained", "C", "present", False): PaperRow("Table 7 row 18, FOCH (SWI)", dice_all=0.28,
                                                             det_all=0.80, uncertain=_LOST),
    (GRADUAL, "pretrained", "C", "present", True): PaperRow("Table 7 row 19, FOCH (SWI)", dice_all=0.29,
                                                            det_all=0.77, uncertain=_LOST + " ('0.29 when SWI "
                                                                                            "replaces SWAN')"),
    (GRADUAL, "scratch", "AB", "present", False): PaperRow("Table 7 row 7", (0.47, 0.58), (0.90, 0.86),
                                                           uncertain=_LOST),
    (GRADUAL, "scratch", "AB", "missing", False): PaperRow("Table 7 row 8", (0.44, 0.42), (0.90, 0.86),
                                                           uncertain=_LOST),
    (GRADUAL, "scratch", "C", "present", False): PaperRow("Table 7 row 15, FOCH (SWI)", dice_all=0.21,
                                                          det_all=0.77, uncertain=_LOST),
}


# ---- table layouts --------------------------------------------------------------------------------------------

def check_models(table: int, models: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """The models of `table` to run (all by default); an unknown table or model is an error naming the choices."""
    if table not in TABLE_MODELS:
        raise ValueError(f"unknown table {table!r}; the thrombus tables are {', '.join(map(str, TABLE_MODELS))}")
    if not models:
        return TABLE_MODELS[table]
    unknown = [m for m in models if m not in TABLE_MODELS[table]]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))} for Table {table}; "
                         f"expected some of {', '.join(TABLE_MODELS[table])}")
    return tuple(m for m in TABLE_MODELS[table] if m in models)


def table_rows(table: int, profile: ClotProfile, models: Optional[Sequence[str]] = None,
               lesion_source: Optional[str] = None) -> List[Row]:
    """The rows of Table 5, 6 or 7 in the paper's order, restricted to `models`."""
    chosen = check_models(table, models)
    lesion = lesion_source or profile.lesion_source
    if lesion not in ("model", "reference"):
        raise ValueError(f"lesion source must be 'model' or 'reference', got {lesion!r}")
    slices = profile.default_slices
    if table == 5:
        return [Row(Network("AttLLSTM", ours), "AB", "present", paper=PAPER_TABLE5[paper],
                    note=f"{ours} slices (paper: {paper})") for ours, paper in profile.slices]
    if table == 6:
        def network(model):
            return Network(model, None if model == NNUNET else slices)
        rows = [Row(network(m), "AB", "present", paper=PAPER_TABLE6[(m, ())]) for m in chosen]
        for chain in (("Lesion",), ("Lesion", "Thr")):
            rows += [Row(network(m), "AB", "present", chain, lesion, PAPER_TABLE6[(m, chain)])
                     for m in (NNUNET, "AttCLSTM", "AttLLSTM") if m in chosen]
        if "UpAttLLSTM" in chosen:
            rows.append(Row(network("UpAttLLSTM"), "AB", "present", ("Big",), paper=PAPER_TABLE6[("UpAttLLSTM",
                                                                                                 ("Big",))]))
        return rows
    rows = []
    for model in chosen:
        init = profile.gradual_init if model == GRADUAL else None
        for test_set, phase in (("AB", "present"), ("AB", "missing"), ("C", "present")):
            for big in (False, True):
                rows.append(Row(Network(model, slices), test_set, phase, ("Big",) if big else (),
                                paper=PAPER_TABLE7.get((model, init, test_set, phase, big))))
    return rows


def row_networks(rows: Sequence[Row], profile: ClotProfile) -> List[Network]:
    """Every network the rows need, in training order (a fine-tune after the model it starts from)."""
    networks: List[Network] = []

    def add(network: Network):
        before = network.pretrained_from(profile)
        if before is not None:
            add(before)
        if network not in networks:
            networks.append(network)
    for row in rows:
        if "Lesion" in row.chain and row.lesion_source == "model":
            add(LESION_NETWORK)
        add(row.network)
    return networks


# ---- metrics and report ---------------------------------------------------------------------------------------

GROUPS = ("proximal", "distal", "all")
METRICS = ("fp_count", "fp_size_mm3", "fn_count", "fn_size_mm3", "dice", "detection")


def table_metrics(label_summary: Mapping[str, Mapping]) -> Dict[str, Dict[str, Optional[float]]]:
    """The paper's columns from `nnunet_ext.evaluation.evaluate.summarize(rows)[label]`, per group (proximal,
    distal, all; a group without cases gives None everywhere):
    FP/FN count = mean per case; FP/FN size = mean size of the FP components / missed clots pooled over the
    group's cases, in mm^3 (None when there is none); Dice = mean per case; detection = mean per-case detection
    rate (the share of patients whose clot is found, with one clot per case)."""
    metrics = {}
    for group in GROUPS:
        values = label_summary.get(group)
        if values is None:
            metrics[group] = {**{m: None for m in METRICS}, "cases": 0}
            continue
        pooled = values["pooled"]

        def size(key):
            mean = pooled[key]["mean"]
            return None if mean is None else mean * 1000.0  # ml -> mm^3
        metrics[group] = {"fp_count": values["fp"]["mean"], "fp_size_mm3": size("fp_size_ml"),
                          "fn_count": values["fn"]["mean"], "fn_size_mm3": size("fn_size_ml"),
                          "dice": values["dice"]["mean"], "detection": values["detection_rate"]["mean"],
                          "cases": values["cases"]}
    return metrics


def aggregate_runs(run_metrics: Sequence[Optional[Mapping]]) -> Dict[str, Dict]:
    """Per group and metric of `table_metrics`, across runs (a missing run is None): {"mean", "std_runs", "runs",
    "values"} (population std, as report._stats for Tables 2-3; mean and std over the runs where the metric has a
    value: a size without any FP is None); "cases" per group from the runs (the same test cases in every run)."""
    finished = [m for m in run_metrics if m is not None]
    aggregate = {}
    for group in GROUPS:
        aggregate[group] = {}
        for metric in METRICS:
            values = [None if m is None else m[group][metric] for m in run_metrics]
            present = [float(v) for v in values if v is not None]
            aggregate[group][metric] = {
                "mean": float(np.mean(present)) if present else None,
                "std_runs": float(np.std(present)) if present else None,
                "runs": len(present), "values": values}
        cases = sorted({m[group]["cases"] for m in finished})
        if len(cases) > 1:
            raise ValueError(f"the runs of one row were evaluated on different numbers of {group} cases: {cases}")
        aggregate[group]["cases"] = cases[0] if cases else None
    return aggregate


def missing_runs(run_results: Sequence[Optional[Mapping]]) -> List[int]:
    """Run numbers (1-based) without a result."""
    return [number for number, result in enumerate(run_results, start=1) if result is None]


def missing_text(run_results: Sequence[Optional[Mapping]]) -> str:
    """'' when every run finished; 'run 2 of 3 missing', 'runs 2, 3 of 3 missing'."""
    missing = missing_runs(run_results)
    if not missing:
        return ""
    return f"run{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {len(run_results)} missing"


# verdicts between rows: (metric, group, higher is better)
JUDGED = (("dice", "all", True), ("detection", "all", True), ("fp_count", "all", False))
METRIC_TITLES = {"fp_count": "FP n", "fp_size_mm3": "FP size", "fn_count": "FN n", "fn_size_mm3": "FN size",
                 "dice": "Dice", "detection": "Det."}


def table_comparisons(table: int, rows: Sequence[Row]) -> List[Tuple[int, int]]:
    """(row, reference row) index pairs of one table: Table 5, every slice count against the paper's 12; Table 6,
    every recurrent model against nnU-Net and every post-processed row against its network's raw row; Table 7,
    gradual dropout against UpAttLLSTM in the same setting and +Big against the raw row."""
    def find(**wanted):
        for index, row in enumerate(rows):
            fields = {"architecture": row.network.architecture, "slices": row.network.slices,
                      "test_set": row.test_set, "phase": row.phase, "chain": row.chain}
            if all(fields[k] == v for k, v in wanted.items()):
                return index
        return None
    pairs = []
    for index, row in enumerate(rows):
        references = []
        if table == 5:
            references.append(next((i for i, r in enumerate(rows) if r.paper == PAPER_TABLE5[12]), None))
        elif table == 6:
            if row.chain:
                references.append(find(architecture=row.network.architecture, chain=()))
            elif row.network.architecture != NNUNET:
                references.append(find(architecture=NNUNET, chain=()))
        else:
            setting = {"test_set": row.test_set, "phase": row.phase}
            if row.network.architecture == GRADUAL:
                references.append(find(architecture="UpAttLLSTM", chain=row.chain, **setting))
            if row.chain:
                references.append(find(architecture=row.network.architecture, chain=(), **setting))
        pairs += [(index, reference) for reference in references if reference is not None and reference != index]
    return pairs


def judge(method: Mapping, reference: Mapping, higher_is_better: bool) -> str:
    """report.verdict on one metric's aggregate ('not judged' without values in both rows)."""
    if method["mean"] is None or reference["mean"] is None:
        return "not judged (no value)"
    return verdict(method, reference) if higher_is_better else verdict(
        {**method, "mean": -method["mean"]}, {**reference, "mean": -reference["mean"]})


def read_reference_results(path: str) -> Dict[str, Dict]:
    """Row key -> metrics of a committed table JSON (e.g. benchmarks/results/clot_quick_table6.json: one run on
    the `easy` preset); {} when there is no such file."""
    if not path or not os.path.isfile(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    return {row["key"]: row["metrics"] for row in saved["rows"] if row.get("metrics")}


def _fmt(value, digits: int = 2) -> str:
    """A number, or an aggregate over runs ({'mean', 'std_runs', ...}) as 'mean ± std'."""
    if isinstance(value, Mapping):
        if value.get("mean") is None:
            return "-"
        return f"{value['mean']:.{digits}f} ± {value['std_runs']:.{digits}f}"
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(values: Tuple[Optional[float], Optional[float]]) -> str:
    return " / ".join(_fmt(v) for v in values)


def paper_text(paper: Optional[PaperRow], which: str, footnotes: List[str]) -> str:
    """'0.55 / 0.54' (P / D), '0.28 (all)' for FOCH rows, '-' when the paper has no such row; uncertain
    values get '?' and a footnote number."""
    if paper is None:
        return "-"
    pooled = paper.dice_all if which == "dice" else paper.det_all
    text = f"{pooled:.2f} (all)" if pooled is not None else _pair(paper.dice if which == "dice" else paper.det)
    if paper.uncertain:
        if paper.uncertain not in footnotes:
            footnotes.append(paper.uncertain)
        text += f" ?[{footnotes.index(paper.uncertain) + 1}]"
    return text


def model_label(row: Row, profile: ClotProfile) -> str:
    network = row.network
    if network.architecture == GRADUAL:
        how = "fine-tuned from UpAttLLSTM" if profile.gradual_init == "pretrained" else "from scratch"
        label = f"UpAttLLSTM + gradual dropout of PHASE (p 0.5, {how})"
    elif network.architecture == NNUNET:
        label = "nnU-Net 3d_fullres (CPU plans)"
    else:
        label = network.architecture
    return label + (f", {row.note}" if row.note else "")


TABLE_TITLES = {5: "Table 5: AttLLSTM and the number of slices",
                6: "Table 6: nnU-Net, the recurrent ablations and UpAttLLSTM, with post-processing",
                7: "Table 7: UpAttLLSTM with gradual modality dropout of PHASE; PHASE absent and an unseen center"}


# how the clot networks are trained (nnunet_ext.training.upattllstm_trainer), said in every report
CLOT_TRAINING_NOTE = (
    "Clot networks' training (nnUNetTrainerUpAttLLSTM*): crops that hold a clot put it anywhere in the crop (not at "
    "its centre, as nnU-Net's oversampling does), clot-free crops are slice windows without clot slices, validation "
    "crops are drawn the same way; AdamW (lr 1e-3, poly decay, weight decay 0.01 except on norms, biases, gains and "
    "embeddings); the Up block normalises with InstanceNorm; without the Up block the attention returns to full "
    "resolution by a learned unpatchify. Tables made before this recipe (centred crops, nnU-Net's SGD, BatchNorm, "
    "nearest upsampling, P_S = 4 with D = 8 in the CPU template, checkpoint_final): "
    "benchmarks/results/before_sampling_fix/. Every model here (nnU-Net and the lesion model included) predicts "
    f"with nnU-Net's {PREDICTION_CHECKPOINT} (the best moving average of the validation pseudo Dice), and the "
    "gradual-dropout fine-tune starts from UpAttLLSTM's (the paper: 'the best UpAttLLSTM'): chosen on the validation "
    "split, where UpAttLLSTM over-fits after its peak.")


def setting_notes(table: int, profile: ClotProfile) -> List[str]:
    """What differs from the paper, said once per report."""
    pixel = profile.training_pixel_area_mm2
    notes = [f"Synthetic clot cohort, preset `{profile.preset}` ({profile.train_per_center} training and "
             f"{profile.test_per_center} test cases per center, field of view {profile.size} mm, seed {profile.seed}); "
             "trained on centers A+B (the paper's CHSF+MATAR); center C (SWI in the SWAN slot, black PHASE: the "
             "paper's FOCH (SWI)) is test-only. Clot networks: template `" + profile.template + f"`, {profile.epochs} "
             f"epochs x {profile.iterations_per_epoch} iterations; nnU-Net: 3d_fullres with `nnUNetPlans_CPU`, same "
             "budget.",
             f"Runs: {profile.runs} per row on the same cohort; run k trains nnU-Net fold k-1 (the same training and "
             f"validation cases in every fold) with NNUNET_EXT_SEED = {profile.seed} + k-1, and everything downstream "
             "(the lesion model, the fine-tune's starting point, predictions, post-processing) is that run's. Cells: "
             "mean ± std across runs (population std); a size without any FP/FN in a run leaves that run out of the "
             "size's mean. Verdicts: a row is better or worse than its reference only where the means differ by more "
             "than the sum of the two rows' stds; otherwise 'no clear difference'.",
             "Columns: FP/FN count = mean per case; FP/FN size = mean size (mm^3) of the false-positive components / "
             "missed clots of the group (the paper's size unit is not stated, probably pixels: not comparable); "
             "Dice = mean per case; Det. = mean per-case detection rate (lesion matching: any overlap). "
             "P / D = proximal / distal occlusions; 'all' = every case of the test set. Paper columns: the paper's "
             "Dice and Det. for the row, P / D.",
             f"Slice counts: the CPU template's patch has {profile.default_slices} slices where the paper's has 12, "
             "so Table 5's 10/12/14 become " + "/".join(str(o) for o, _ in profile.slices) + " (scaled by "
             f"{profile.default_slices}/12); Tables 6 and 7 use {profile.default_slices}.",
             CLOT_TRAINING_NOTE]
    if table in (6, 7):
        notes.append(f"Min (paper 4.2.4: eliminate the predicted objects smaller than n_min pixels; Table 4: n_min = "
                     f"{PAPER_MIN_SIZE_PX}) is the first step of every post-processed row; no column of Tables 6-7 "
                     "switches it, so rows marked '-' are raw and every other row starts with it. Scaled by in-plane "
                     f"area: {PAPER_MIN_SIZE_PX} pixels of ~{PAPER_PIXEL_MM} mm are "
                     f"{PAPER_MIN_SIZE_PX * PAPER_PIXEL_MM ** 2:.2f} mm^2; the training centers' mean pixel is "
                     f"{pixel:.3f} mm^2, so n_min = round({PAPER_MIN_SIZE_PX * PAPER_PIXEL_MM ** 2:.2f} / {pixel:.3f}) "
                     f"= {profile.min_size_voxels} voxels (26-connected). By area, not volume: the paper counts "
                     "pixels and does not state its slice thickness.")
    if table == 6:
        lesion = ("a stock nnU-Net 3d_fullres model (CPU plans, same budget, one per run) trained on DWI alone with "
                  "the lesion labels of A+B (the paper: a separate nnU-Net lesion model)"
                  if profile.lesion_source == "model" else "the reference lesion (oracle: the rows are marked)")
        notes.append(f"Post-processing (paper 4.2.4): Lesion = keep the objects within d of the closest object's "
                     f"distance to the lesion centroid, d = {profile.lesion_distance_mm} mm (the paper's 20 pixels "
                     f"of a 256-pixel crop, scaled to the {profile.size} mm field of view); lesion mask from {lesion}. "
                     f"Thr = grow the objects into voxels with probability > {THRESHOLD}; Big = keep the largest "
                     "object.")
    if table == 7:
        notes.append("PHASE absent: zero image (`nnunet_ext_predict --missing PHASE`). Center C's PHASE is black "
                     "already. The paper's FOCH (SWAN) rows and its model without PHASE (rows 4-6) have no "
                     "counterpart here. Big = keep the largest object.")
    return notes


def _cell(stats: Mapping, digits: int) -> str:
    """'0.60 ± 0.10' (one run: '0.60')."""
    if stats["mean"] is None:
        return "-"
    if stats["runs"] < 2:
        return _fmt(stats["mean"], digits)
    return f"{_fmt(stats['mean'], digits)} ± {_fmt(stats['std_runs'], digits)}"


def _values(stats: Mapping, digits: int = 2) -> str:
    return ", ".join(_fmt(v, digits) for v in stats["values"])


def write_clot_report(table: int, profile: ClotProfile, rows: Sequence[Row],
                      results: Mapping[str, Sequence[Optional[Dict]]], out_prefix: str, command: str,
                      provenance: Mapping, extra_notes: Sequence[str] = (),
                      reference: Optional[Mapping[str, Mapping]] = None, reference_label: str = ""
                      ) -> Dict[str, str]:
    """Write <out_prefix>.md/.csv/.json. `results`: row key -> one result per run (None: not finished); a row's
    missing runs are named. `reference`: row key -> metrics of another run of the table (the committed one-run
    results on the `easy` preset), shown in a section of its own."""
    footnotes: List[str] = []
    notes = setting_notes(table, profile) + list(extra_notes)
    header = ["#", "model", "test set", "PHASE", "post-proc.", "runs"]
    for metric in METRICS:
        header += [f"{METRIC_TITLES[metric]} P", f"{METRIC_TITLES[metric]} D"]
    header += ["Dice all", "Det. all", "Dice all per run", "cases P/D", "paper Dice P / D", "paper Det. P / D"]
    lines = [f"# {TABLE_TITLES[table]} (synthetic clot cohort `{profile.preset}`, profile `{profile.name}`, "
             f"{profile.runs} runs per row)", "", f"Command: `{command}`", ""] + [f"- {note}" for note in notes] + [
        "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_rows, json_rows, aggregates, missing_lines = [], [], {}, []
    for number, row in enumerate(rows, start=1):
        run_results = list(results.get(row.key) or [None] * profile.runs)
        finished = [r for r in run_results if r is not None]
        aggregate = aggregate_runs([r and r["metrics"] for r in run_results]) if finished else None
        aggregates[row.key] = aggregate
        missing = missing_text(run_results)
        if missing:
            missing_lines.append(f"- row {number} ({model_label(row, profile)}, {row.postprocessing}): {missing}")
        cells = [str(number), model_label(row, profile), TEST_SET_LABELS[row.test_set], row.phase, row.postprocessing,
                 f"{len(finished)}/{len(run_results)}" + (f" ({missing})" if missing else "")]
        if aggregate is None:
            cells += ["not run"] + [""] * (len(header) - len(cells) - 3)
        else:
            for metric in METRICS:
                digits = 1 if "size" in metric else 2
                cells += [_cell(aggregate["proximal"][metric], digits), _cell(aggregate["distal"][metric], digits)]
            cells += [_cell(aggregate["all"]["dice"], 2), _cell(aggregate["all"]["detection"], 2),
                      _values(aggregate["all"]["dice"]), f"{aggregate['proximal']['cases']}/"
                                                         f"{aggregate['distal']['cases']}"]
        cells += [paper_text(row.paper, "dice", footnotes), paper_text(row.paper, "det", footnotes)]
        lines.append("| " + " | ".join(cells) + " |")
        record = {"row": number, "key": row.key, "model": model_label(row, profile),
                  "architecture": row.network.architecture, "slices": row.network.slices,
                  "test_set": row.test_set, "phase": row.phase, "postprocessing": row.postprocessing,
                  "runs_finished": len(finished), "runs": len(run_results), "missing": missing}
        flat = dict(record)
        for group in GROUPS:
            for metric in METRICS:
                stats = None if aggregate is None else aggregate[group][metric]
                flat[f"{metric}_{group}"] = None if stats is None else stats["mean"]
                flat[f"{metric}_{group}_std"] = None if stats is None else stats["std_runs"]
                flat[f"{metric}_{group}_runs"] = None if stats is None else ";".join(
                    "" if v is None else repr(v) for v in stats["values"])
            flat[f"cases_{group}"] = None if aggregate is None else aggregate[group]["cases"]
        paper = row.paper or PaperRow("")
        flat.update({"paper_dice_P": paper.dice[0], "paper_dice_D": paper.dice[1], "paper_dice_all": paper.dice_all,
                     "paper_det_P": paper.det[0], "paper_det_D": paper.det[1], "paper_det_all": paper.det_all,
                     "paper_source": paper.source, "paper_uncertain": paper.uncertain})
        csv_rows.append(flat)
        json_rows.append({**record, "metrics": aggregate, "run_metrics": [r and r["metrics"] for r in run_results],
                          "paper": asdict(row.paper) if row.paper else None,
                          "result": finished[0] and {k: finished[0][k] for k in ("trainer", "plans", "commands",
                                                                                  "folders") if k in finished[0]}
                          if finished else None,
                          "reference": (reference or {}).get(row.key)})
    if footnotes:
        lines += [""] + [f"?[{i}] {text}." for i, text in enumerate(footnotes, start=1)]
    if missing_lines:
        lines += ["", "Missing runs (the cells above are over the finished runs only):", ""] + missing_lines

    verdicts = []
    pairs = table_comparisons(table, rows)
    if pairs:
        lines += ["", "Verdicts (mean ± std across runs; better / worse only beyond the sum of the stds; FP n: fewer "
                      "is better):", ""]
    for index, ref_index in pairs:
        method, base = aggregates[rows[index].key], aggregates[rows[ref_index].key]
        if method is None or base is None:
            continue
        parts, record = [], {"row": index + 1, "reference": ref_index + 1}
        for metric, group, higher in JUDGED:
            said = judge(method[group][metric], base[group][metric], higher)
            record[f"{metric}_{group}"] = said
            parts.append(f"{METRIC_TITLES[metric]} {group} {_cell(method[group][metric], 2)} vs "
                         f"{_cell(base[group][metric], 2)}: {said}")
        verdicts.append(record)
        lines.append(f"- row {index + 1} vs row {ref_index + 1} ({model_label(rows[index], profile)}, "
                     f"{rows[index].postprocessing} vs {model_label(rows[ref_index], profile)}, "
                     f"{rows[ref_index].postprocessing}): " + "; ".join(parts))

    if reference:
        lines += ["", f"## Beside: {reference_label or 'reference results'}", "",
                  "| # | model | test set | PHASE | post-proc. | Dice P | Dice D | Dice all | Det. all | FP n all | "
                  f"this table: Dice all ({profile.preset}) |", "|" + "---|" * 11]
        for number, row in enumerate(rows, start=1):
            old = reference.get(row.key)
            now = aggregates[row.key]
            if old is None:
                cells = ["-"] * 5
            else:
                cells = [_fmt(old["proximal"]["dice"]), _fmt(old["distal"]["dice"]), _fmt(old["all"]["dice"]),
                         _fmt(old["all"]["detection"]), _fmt(old["all"]["fp_count"])]
            post = "-" if not row.chain else "+".join(row.chain)
            now_text = "-" if now is None else _cell(now["all"]["dice"], 2)
            lines.append(f"| {number} | {model_label(row, profile)} | {TEST_SET_LABELS[row.test_set]} | {row.phase} | "
                         f"{post} | " + " | ".join(cells) + f" | {now_text} |")
    lines += ["", f"Versions: {provenance['versions']}; seed {provenance.get('seed')} (+ run - 1).", ""]
    paths = write_table_files(out_prefix, lines, csv_rows, {
        "table": table, "profile": asdict(profile), "command": command, "provenance": dict(provenance),
        "notes": notes, "rows": json_rows, "verdicts": verdicts, "reference_label": reference_label if reference
        else None})
    return paths
