"""The rows of Tables 5-7: which network (architecture, slices, target), test set, PHASE present or absent and
post-processing chain; the networks a selection of rows needs, in training order; which rows a row is judged
against.
  * Table 5: AttLLSTM with several slice counts (the paper: 10, 12, 14; here scaled to the CPU patch, see
    ClotProfile.slices).
  * Table 6: nnU-Net (3d_fullres, CPU plans) against CLSTM, LLSTM, AttCLSTM, AttLLSTM and UpAttLLSTM, without
    post-processing, then +Lesion and +Lesion+Thr (nnU-Net, AttCLSTM, AttLLSTM) and +Big (UpAttLLSTM).
  * Table 7: UpAttLLSTM against UpAttLLSTMGradualDrop (PHASE, drop probability 0.5) on A + B with PHASE present
    and absent (zero image), and on C; each without and with Big.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from nnunet_ext.experiments.clot.paper_numbers import PAPER_TABLE5, PAPER_TABLE6, PAPER_TABLE7, PaperRow
from nnunet_ext.experiments.clot.profiles import (CLOT_ID, DATASET_NAMES, GRADUAL, LESION_ID, MIN_SIZE, NNUNET,
                                                  TABLE_MODELS, ClotProfile)


@dataclass(frozen=True)
class Network:
    """One trained model: an architecture on the clot labels (or nnU-Net on the lesion labels), trained plainly or
    with gradual dropout of PHASE (Table 7)."""
    architecture: str                 # 'nnU-Net' or a clot architecture (CLSTM, ..., UpAttLLSTM)
    slices: Optional[int] = None      # recurrent models: patch slices
    target: str = "clot"              # 'clot' or 'lesion'
    gradual_dropout: bool = False     # trained with gradual dropout of PHASE

    @classmethod
    def of_model(cls, model: str, slices: Optional[int] = None) -> "Network":
        """The network of a table's model name (GRADUAL: UpAttLLSTM with gradual dropout)."""
        return cls("UpAttLLSTM", slices, gradual_dropout=True) if model == GRADUAL else cls(model, slices)

    @property
    def model(self) -> str:
        """The tables' name of the model (and of its results: keys, file names, the JSON's "architecture")."""
        return GRADUAL if self.gradual_dropout else self.architecture

    @property
    def key(self) -> str:
        if self.target == "lesion":
            return "lesion_nnunet"
        return "nnunet" if self.architecture == NNUNET else f"{self.model}_s{self.slices}"

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
        return f"nnUNetPlans_{self.architecture}_s{self.slices}"

    def trainer(self, profile: ClotProfile) -> str:
        if self.architecture == NNUNET:
            return profile.trainer("NoDropout")
        return profile.clot_trainer(self.gradual_dropout)

    def pretrained_from(self, profile: ClotProfile) -> Optional["Network"]:
        """The network whose final weights this one starts from (the paper's fine-tune), if any."""
        if self.gradual_dropout and profile.gradual_init == "pretrained":
            return Network("UpAttLLSTM", self.slices)
        return None


LESION_NETWORK = Network(NNUNET, target="lesion")


@dataclass(frozen=True)
class Row:
    network: Network
    test_set: str                     # 'AB' or 'C'
    phase_channel: str                # the PHASE input: 'present' or 'missing' (a zero image)
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
        return f"{self.network.key}__{self.test_set}_{self.phase_channel}__{chain}"

    @property
    def postprocessing(self) -> str:
        """The steps in order: the min-size step first in every post-processed chain ('-': raw)."""
        text = "+".join((MIN_SIZE,) + self.chain) if self.chain else "-"
        return text + (" (reference lesion, oracle)" if "Lesion" in self.chain and
                       self.lesion_source == "reference" else "")


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
                rows.append(Row(Network.of_model(model, slices), test_set, phase, ("Big",) if big else (),
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


def table_comparisons(table: int, rows: Sequence[Row]) -> List[Tuple[int, int]]:
    """(row, reference row) index pairs of one table: Table 5, every slice count against the paper's 12; Table 6,
    every recurrent model against nnU-Net and every post-processed row against its network's raw row; Table 7,
    gradual dropout against UpAttLLSTM in the same setting and +Big against the raw row."""
    def find(**wanted):
        for index, row in enumerate(rows):
            fields = {"model": row.network.model, "slices": row.network.slices,
                      "test_set": row.test_set, "phase_channel": row.phase_channel, "chain": row.chain}
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
                references.append(find(model=row.network.model, chain=()))
            elif row.network.architecture != NNUNET:
                references.append(find(model=NNUNET, chain=()))
        else:
            setting = {"test_set": row.test_set, "phase_channel": row.phase_channel}
            if row.network.gradual_dropout:
                references.append(find(model="UpAttLLSTM", chain=row.chain, **setting))
            if row.chain:
                references.append(find(model=row.network.model, chain=(), **setting))
        pairs += [(index, reference) for reference in references if reference is not None and reference != index]
    return pairs
