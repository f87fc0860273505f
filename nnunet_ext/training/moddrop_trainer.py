"""ModDrop+ and ModDrop++ in nnU-Net: a modality-code-conditioned first convolution (docs/methods.md §2).

ModDrop+ = the dynamic head with MultiUnet-style dropout (factor 0, exact zeros, channels chosen by name);
the trainer states each sample's code: 1 where its dropout draw kept the channel and the data has it (a channel
that is zero in the data itself, e.g. a center without B0, is absent, as inference will read it). At inference
the code is read off the input (an all-zero channel is absent), so the stock predictor and its sliding window
need nothing else.
ModDrop++ adds intra-subject co-training: every batch goes through the same weights full and dropped,
and the loss adds a dissimilarity of the two dynamic-head outputs to nnU-Net's loss on both outputs.

The co-training's weight (default 0.5; 0 switches it off) and similarity ('ssim': 1 - SSIM, default; 'mse') are
class attributes, spelled in the trainer's name (nnunet_ext.training.variants: _w03, _mse), so that they are in
its results folder's name; the environment variables that once set them are refused with that hint.
"""
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast

from nnunet_ext.dropout.modality_dropout import ModalityDropoutDraw
from nnunet_ext.losses.similarity import feature_dissimilarity
from nnunet_ext.networks.dynamic_head import (capturing_head_output, modality_code_from_input, training_modality_code,
                                              using_modality_code, wrap_first_convolution)
from nnunet_ext.training.environment import TrainerEnvironment
from nnunet_ext.training.modality_dropout_trainer import nnUNetTrainerModalityDropout

CODE_RULE = {"training": "1 where the dropout draw kept the channel and it has a nonzero voxel in the patch "
                         "(dropped channels are exactly zero)",
             "inference": "1 where the channel has a nonzero voxel in the patch, else 0"}


class nnUNetTrainerModDropPlus(nnUNetTrainerModalityDropout):
    dropout_schedule = "none"   # plain dropout: a dropped channel is zero, as an absent one is at inference
    dropout_noise_std = 0.0

    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        # static, so nnUNetv2_predict builds the same wrapped network and the controller's weights load
        network = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                           num_output_channels, enable_deep_supervision)
        wrap_first_convolution(network, num_input_channels)
        return network

    def collect_settings(self) -> Dict:
        return {**super().collect_settings(), "modality_code": CODE_RULE}

    def optimisation_step(self, batch: dict, draw: ModalityDropoutDraw, full_data: Optional[torch.Tensor]) -> dict:
        # on the device first, so the code is read there (nnUNetTrainer.train_step's own .to() is then a no-op)
        data = torch.as_tensor(batch['data']).to(self.device, non_blocking=True)
        with using_modality_code(self.network, training_modality_code(~draw.dropped, data)):
            return super().optimisation_step({**batch, 'data': data}, draw, full_data)


def cotraining_settings(weight: float, similarity: str) -> Dict:
    """The co-training settings of a ModDrop++ trainer class (spelled in its name), checked. The environment
    variables that once set them are refused by training/environment.py."""
    if not (isinstance(weight, (int, float)) and weight >= 0 and np.isfinite(weight)):
        raise ValueError(f"the co-training weight must be a number >= 0, got {weight!r}")
    if similarity not in ("ssim", "mse"):
        raise ValueError(f"the co-training similarity must be 'ssim' or 'mse', got {similarity!r}")
    return {"weight": float(weight), "similarity": similarity}


class nnUNetTrainerModDropPlusPlus(nnUNetTrainerModDropPlus):
    keeps_full_batch = True
    cotraining_weight: float = 0.5
    cotraining_similarity: str = "ssim"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._similarities: List[float] = []

    def resolve_settings(self, dataset_json: dict, environment: TrainerEnvironment) -> None:
        super().resolve_settings(dataset_json, environment)
        self.cotraining = cotraining_settings(self.cotraining_weight, self.cotraining_similarity)

    def collect_settings(self) -> Dict:
        return {**super().collect_settings(), "cotraining": self.cotraining}

    def restore_settings(self, settings: Dict) -> None:
        super().restore_settings(settings)
        self.cotraining = settings["cotraining"]

    def cotraining_loss(self, full_data: torch.Tensor, dropped_data: torch.Tensor, code: torch.Tensor,
                        target: Union[torch.Tensor, List[torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """nnU-Net's loss on the full and on the dropped batch, plus weight x dissimilarity of the two
        dynamic-head outputs; returns (total, similarity term). `code` is the dropped batch's code; the full
        batch's is read off its data (a channel the data lacks is absent in both).

        Both go through the network as one batch of 2N: the same as two passes (instance norm is per sample),
        cheaper, and one forward per backward is what DDP supports."""
        n = full_data.shape[0]
        full_code = modality_code_from_input(full_data)
        with capturing_head_output(self.network) as head:
            with using_modality_code(self.network, torch.cat([full_code, code.to(full_code)])):
                output = self.network(torch.cat([full_data, dropped_data]))
            features_full, features_dropped = head.last_output[:n], head.last_output[n:]
        if isinstance(output, (list, tuple)):  # deep supervision
            output_full, output_dropped = [o[:n] for o in output], [o[n:] for o in output]
        else:
            output_full, output_dropped = output[:n], output[n:]
        segmentation = self.loss(output_full, target) + self.loss(output_dropped, target)
        dissimilarity = feature_dissimilarity(features_full, features_dropped, self.cotraining["similarity"])
        if self.cotraining["weight"] == 0:
            return segmentation, dissimilarity.detach()
        return segmentation + self.cotraining["weight"] * dissimilarity, dissimilarity.detach()

    def optimisation_step(self, batch: dict, draw: ModalityDropoutDraw, full_data: Optional[torch.Tensor]) -> dict:
        # nnUNetTrainer.train_step, with the co-training loss in place of the single forward pass
        target = batch['target']
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        full = full_data.to(self.device, non_blocking=True)
        dropped = batch['data'].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == 'cuda' else dummy_context():
            loss, dissimilarity = self.cotraining_loss(full, dropped, training_modality_code(~draw.dropped, full),
                                                       target)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        self._similarities.append(float(dissimilarity))
        return {'loss': loss.detach().cpu().numpy()}

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._similarities.clear()

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        self.print_to_log_file(f"co-training: mean {self.cotraining['similarity']} dissimilarity "
                               f"{np.mean(self._similarities):.4f} (weight {self.cotraining['weight']:g})")
