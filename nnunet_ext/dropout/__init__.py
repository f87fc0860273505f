"""Modality dropout math: the gradual schedule f(t), per-sample drop draws and their application.

Pure functions only; the trainers in `trainers/` decide *when* to call them.
"""
from nnunet_ext.dropout.schedule import SCHEDULE_PRESETS, gradual_factor, schedule_names
from nnunet_ext.dropout.modality_dropout import ModalityDropoutDraw, apply_modality_dropout, draw_modality_dropout
from nnunet_ext.dropout.config import ModalityDropoutConfig, resolve_droppable_channels

__all__ = [
    "SCHEDULE_PRESETS", "gradual_factor", "schedule_names",
    "ModalityDropoutDraw", "draw_modality_dropout", "apply_modality_dropout",
    "ModalityDropoutConfig", "resolve_droppable_channels",
]
