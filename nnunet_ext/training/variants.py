"""One factory for all named trainer variants, so `trainers/` can list them one line each.

nnU-Net selects a trainer by class name only (`-tr NAME`), and keeps that name in checkpoints and results
folders, so every setting of a variant is spelled in its name:

    nnUNetTrainer<Family>[_p<PP>][_<N>epochs][_<K>it][_<V>valit][_w<WW>][_mse]

Family: GradualDrop (schedule 'paper'), GradualDropCode2025 ('code2025'), GradualDropExp ('exp'),
MultiUnet (schedule 'none', i.e. plain dropout with factor 0), ModDropPlus / ModDropPlusPlus (dynamic
first convolution, without / with co-training), NoDropout (our budget knobs, no drop), and the clot network
trainers UpAttLLSTM / UpAttLLSTMGradualDrop (PHASE droppable by default), and the same with nnU-Net's in-plane
rotation and scaling added to the paper's flips and noise, UpAttLLSTMSpatialDA / UpAttLLSTMSpatialDAGradualDrop.
_pXY is the drop probability X.Y (the paper's "1-p"): _p02 = 0.2, _p05 = 0.5, _p08 = 0.8, _p10 = 1.0;
default 0.5. _Nepochs sets num_epochs (default 1000; the paper fine-tunes with 400). _Kit sets the training
iterations per epoch (default nnU-Net's 250) and _Vvalit the validation iterations per epoch (default 50): a
CPU budget, and part of what the model is (the iterations it trained, the pseudo Dice that chose
checkpoint_best), so in the name and the results folder like the rest.
ModDropPlusPlus only: _wWW is the co-training weight W.W (_w05 = 0.5, the default; _w00 switches the term off;
_w10 = 1.0), _mse measures the dissimilarity of the two dynamic-head outputs by MSE instead of 1 - SSIM.
Any name of this grammar is a trainer nnU-Net finds (trainers/ answers for names it does not list).
"""
import math
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Type

from nnunet_ext.training.ext_trainer import nnUNetTrainerExt
from nnunet_ext.training.modality_dropout_trainer import nnUNetTrainerModalityDropout
from nnunet_ext.training.moddrop_trainer import nnUNetTrainerModDropPlus, nnUNetTrainerModDropPlusPlus
from nnunet_ext.training.upattllstm_trainer import (nnUNetTrainerUpAttLLSTM, nnUNetTrainerUpAttLLSTMGradualDrop,
                                                    nnUNetTrainerUpAttLLSTMSpatialDA,
                                                    nnUNetTrainerUpAttLLSTMSpatialDAGradualDrop)

# family -> (base class, dropout schedule); None: no modality dropout
FAMILIES: Dict[str, Tuple[Type[nnUNetTrainerExt], Optional[str]]] = {
    "GradualDrop": (nnUNetTrainerModalityDropout, "paper"),
    "GradualDropCode2025": (nnUNetTrainerModalityDropout, "code2025"),
    "GradualDropExp": (nnUNetTrainerModalityDropout, "exp"),
    "MultiUnet": (nnUNetTrainerModalityDropout, "none"),
    "ModDropPlus": (nnUNetTrainerModDropPlus, "none"),
    "ModDropPlusPlus": (nnUNetTrainerModDropPlusPlus, "none"),
    "NoDropout": (nnUNetTrainerExt, None),
    "UpAttLLSTM": (nnUNetTrainerUpAttLLSTM, None),
    "UpAttLLSTMGradualDrop": (nnUNetTrainerUpAttLLSTMGradualDrop, "paper"),
    "UpAttLLSTMSpatialDA": (nnUNetTrainerUpAttLLSTMSpatialDA, None),
    "UpAttLLSTMSpatialDAGradualDrop": (nnUNetTrainerUpAttLLSTMSpatialDAGradualDrop, "paper"),
}
_NAME = re.compile(r"^nnUNetTrainer(?P<family>[A-Za-z0-9]+?)(?:_p(?P<prob>\d{2}))?(?:_(?P<epochs>\d+)epochs)?"
                   r"(?:_(?P<iterations>\d+)it)?(?:_(?P<val_iterations>\d+)valit)?"
                   r"(?:_w(?P<weight>\d{2}))?(?P<mse>_mse)?$")
GRAMMAR = "nnUNetTrainer<Family>[_pPP][_Nepochs][_Kit][_Vvalit][_wWW][_mse]"
NNUNET_EPOCHS = 1000
COTRAINING_FAMILIES = ("ModDropPlusPlus",)


@dataclass(frozen=True)
class VariantSpec:
    family: str
    schedule: Optional[str]   # None: no modality dropout
    drop_probability: Optional[float]
    epochs: int
    cotraining_weight: Optional[float] = None   # ModDrop++ only
    cotraining_similarity: Optional[str] = None
    iterations_per_epoch: Optional[int] = None       # None: nnU-Net's (250)
    val_iterations_per_epoch: Optional[int] = None   # None: nnU-Net's (50)


def parse_trainer_name(name: str) -> VariantSpec:
    match = _NAME.match(name)
    if match is None or match["family"] not in FAMILIES:
        raise ValueError(f"{name!r} is not a trainer variant name; expected {GRAMMAR} with Family in "
                         f"{', '.join(FAMILIES)}")
    schedule = FAMILIES[match["family"]][1]
    if schedule is None and match["prob"] is not None:
        raise ValueError(f"{name!r}: the {match['family']} family takes no drop probability")
    counts = {}
    for key, what in (("epochs", "epochs"), ("iterations", "iterations per epoch"),
                      ("val_iterations", "validation iterations per epoch")):
        if match[key] is not None and int(match[key]) < 1:
            raise ValueError(f"{name!r}: the number of {what} must be >= 1")
        counts[key] = int(match[key]) if match[key] is not None else None
    budget = {"epochs": counts["epochs"] or NNUNET_EPOCHS, "iterations_per_epoch": counts["iterations"],
              "val_iterations_per_epoch": counts["val_iterations"]}
    probability = None if schedule is None else (int(match["prob"]) / 10 if match["prob"] else 0.5)
    if match["family"] not in COTRAINING_FAMILIES:
        if match["weight"] is not None or match["mse"]:
            raise ValueError(f"{name!r}: _wWW and _mse set ModDrop++'s co-training; the {match['family']} family "
                             "has none")
        return VariantSpec(match["family"], schedule, probability, **budget)
    weight = int(match["weight"]) / 10 if match["weight"] is not None else 0.5
    return VariantSpec(match["family"], schedule, probability, cotraining_weight=weight,
                       cotraining_similarity="mse" if match["mse"] else "ssim", **budget)


def variant_name(family: str, drop_probability: Optional[float] = None, epochs: int = NNUNET_EPOCHS,
                 iterations_per_epoch: Optional[int] = None, val_iterations_per_epoch: Optional[int] = None) -> str:
    """The trainer name of these settings (the inverse of parse_trainer_name for the settings it takes; nnU-Net's
    defaults are left out of the name). Raises ValueError for settings no name can spell."""
    parts = [f"nnUNetTrainer{family}"]
    if drop_probability is not None:
        if not math.isclose(drop_probability * 10, round(drop_probability * 10)):
            raise ValueError(f"drop probability {drop_probability} has no name: _pXY spells X.Y, one decimal")
        parts.append(f"_p{round(drop_probability * 10):02d}")
    if epochs != NNUNET_EPOCHS:
        parts.append(f"_{epochs}epochs")
    if iterations_per_epoch is not None:
        parts.append(f"_{iterations_per_epoch}it")
    if val_iterations_per_epoch is not None:
        parts.append(f"_{val_iterations_per_epoch}valit")
    name = "".join(parts)
    parse_trainer_name(name)  # refuses what the grammar does not (an unknown family, a count < 1, ...)
    return name


def trainer_variant(name: str) -> Type[nnUNetTrainerExt]:
    """The trainer class that `name` describes, named `name` (nnU-Net names results folders after it)."""
    spec = parse_trainer_name(name)
    base = FAMILIES[spec.family][0]
    attributes = {"training_epochs": spec.epochs, "training_iterations_per_epoch": spec.iterations_per_epoch,
                  "validation_iterations_per_epoch": spec.val_iterations_per_epoch}
    if spec.schedule is not None:
        attributes.update(drop_probability=spec.drop_probability, dropout_schedule=spec.schedule)
    if spec.cotraining_weight is not None:
        attributes.update(cotraining_weight=spec.cotraining_weight, cotraining_similarity=spec.cotraining_similarity)
    attributes["__doc__"] = f"{base.__name__} with {spec}."
    return type(name, (base,), attributes)
