"""Gradual modality dropout (and MultiUnet, its factor-0 case) inside nnU-Net's training loop.

The dropout is applied in `train_step`, to training batches only, after nnU-Net's augmentation and
normalisation: the augmentation runs in worker processes that cannot see the current epoch (docs/methods.md §6).
Validation batches and inference are untouched; at inference an absent modality is a zero image, which is
what a dropped channel looks like at the end of the schedule.
"""
from typing import Dict, List, Optional

import numpy as np
import torch

from nnunet_ext.dropout.config import ModalityDropoutConfig, epoch_seed, modality_dropout_config
from nnunet_ext.training.environment import TrainerEnvironment
from nnunet_ext.dropout.modality_dropout import ModalityDropoutDraw, apply_modality_dropout, draw_modality_dropout
from nnunet_ext.dropout.schedule import gradual_factor
from nnunet_ext.training.ext_trainer import nnUNetTrainerExt


class nnUNetTrainerModalityDropout(nnUNetTrainerExt):
    """Drops the channels named in dataset.json `droppable_channels` (or NNUNET_EXT_DROPPABLE_CHANNELS).

    Variants set the class attributes below; see `nnunet_ext.training.variants`.
    """

    drop_probability: float = 0.5   # the paper's "1-p"
    dropout_schedule: str = "paper"
    dropout_noise_std: float = 0.01

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # The results folder's dataset.json (copied by nnU-Net at train start) records the channels really used.
        self.dataset_json = {**self.dataset_json, "droppable_channels": list(self.modality_dropout.droppable_names)}
        self._dropout_generator = torch.Generator()
        self._dropout_factor = 1.0
        self._dropped_per_channel = np.zeros(len(self.modality_dropout.channel_names), dtype=np.int64)
        self._samples_seen = 0

    def resolve_settings(self, dataset_json: dict, environment: TrainerEnvironment) -> None:
        super().resolve_settings(dataset_json, environment)
        self.modality_dropout = modality_dropout_config(dataset_json, self.drop_probability, self.dropout_schedule,
                                                        self.dropout_noise_std, environment.droppable_channels,
                                                        environment.seed)

    def collect_settings(self) -> Dict:
        return {**super().collect_settings(), "modality_dropout": self.modality_dropout.to_dict()}

    def restore_settings(self, settings: Dict) -> None:
        super().restore_settings(settings)
        self.modality_dropout = ModalityDropoutConfig.from_dict(settings["modality_dropout"])

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        config = self.modality_dropout
        # Seeded per (rank, epoch): DDP ranks draw independently and a -c run repeats the uninterrupted draws.
        self._dropout_generator.manual_seed(epoch_seed(config.seed, self.local_rank, self.current_epoch))
        self._dropout_factor = gradual_factor(self.current_epoch, self.num_epochs, config.schedule)
        self._dropped_per_channel[:] = 0
        self._samples_seen = 0
        self.print_to_log_file(f"modality dropout: schedule {config.schedule}, f(t) = {self._dropout_factor:g} "
                               f"at epoch {self.current_epoch}/{self.num_epochs}, drop probability "
                               f"{config.drop_probability:g} on {', '.join(config.droppable_names)}")

    # Subclasses that need the undropped batch too (co-training) set this; others drop in place.
    keeps_full_batch: bool = False

    def train_step(self, batch: dict) -> dict:
        data = torch.as_tensor(batch['data'])
        config = self.modality_dropout
        draw = draw_modality_dropout(data.shape[0], data.shape[1], config.droppable_indices, config.drop_probability,
                                     factor=self._dropout_factor, noise_std=config.noise_std,
                                     generator=self._dropout_generator)
        # in place unless the full batch is needed: a copy of a whole batch per step costs more than the drop
        dropped = apply_modality_dropout(data, draw, inplace=not self.keeps_full_batch)
        self._samples_seen += draw.batch_size
        self._dropped_per_channel += draw.dropped.sum(dim=0).numpy()
        return self.optimisation_step({**batch, 'data': dropped}, draw, data if self.keeps_full_batch else None)

    def optimisation_step(self, batch: dict, draw: ModalityDropoutDraw, full_data: Optional[torch.Tensor]) -> dict:
        """One step of nnU-Net's optimisation on the dropped batch; `draw` says what was dropped."""
        return super().train_step(batch)

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        names = self.modality_dropout.channel_names
        rates = {names[i]: round(int(self._dropped_per_channel[i]) / max(1, self._samples_seen), 3)
                 for i in self.modality_dropout.droppable_indices}
        self.print_to_log_file(f"modality dropout: dropped fraction this epoch {rates} "
                               f"over {self._samples_seen} samples")
