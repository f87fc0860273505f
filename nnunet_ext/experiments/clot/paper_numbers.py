"""The paper's Dice and detection rate of every row of Tables 5-7 (P / D; FOCH rows: all cases), with why a value
or its mapping onto our rows is uncertain."""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from nnunet_ext.experiments.clot.profiles import GRADUAL, NNUNET


@dataclass(frozen=True)
class PaperRow:
    """The paper's Dice and detection rate for a row (P, D); FOCH rows give one value for all cases."""
    source: str
    dice: Tuple[Optional[float], Optional[float]] = (None, None)
    det: Tuple[Optional[float], Optional[float]] = (None, None)
    dice_all: Optional[float] = None
    det_all: Optional[float] = None
    uncertain: str = ""   # why the value or the mapping is uncertain; empty: read off the table as is


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
