"""The clot networks' optimizer: AdamW with nnU-Net's poly decay, no weight decay on norms, embeddings and gains.

Why not nnU-Net's SGD (lr 1e-2, momentum 0.99, Nesterov, weight decay on every parameter): it is tuned for
convolutional U-Nets. On the attention models it destabilised the attention: in a toy run AttLLSTM's softmax
entropy fell from 0.99 to 0.20 of its maximum and the residual gain alpha grew from 1 to 6 while Dice fell to 0;
Adam at 1e-3 stayed stable. The paper names no optimizer; AdamW at 1e-3 with decoupled weight decay is what
ViT-style models are trained with. As in ViT / timm, no weight decay on one-dimensional parameters (biases, norm
weights, the residual gains alpha and beta) nor on the class and position embeddings: decaying them pulls the
gains and the positional code towards zero, which is not a regularisation of the mapping.
nnU-Net's plain 3D U-Net rows keep nnU-Net's own SGD.
"""
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from torch import nn

from nnunet_ext.networks.attention_blocks import PatchEmbedding


@dataclass(frozen=True)
class ClotOptimizerSettings:
    name: str = "AdamW"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    betas: Tuple[float, float] = (0.9, 0.999)
    schedule: str = "poly (nnU-Net: lr * (1 - epoch / epochs) ** 0.9)"
    no_decay: str = "biases, norm weights, residual gains (1-D or scalar parameters), class and position embeddings"

    def as_dict(self) -> Dict:
        return {**asdict(self), "betas": list(self.betas)}


def embedding_parameters(network: nn.Module) -> List[nn.Parameter]:
    """The class tokens and position embeddings of every patch embedding in `network`."""
    found: List[nn.Parameter] = []
    for module in network.modules():
        if isinstance(module, PatchEmbedding):
            found += [module.class_token, module.position]
    return found


def parameter_groups(network: nn.Module, weight_decay: float) -> List[Dict]:
    """Two AdamW groups: decayed (weights of convolutions and linear layers) and not decayed (parameters with at
    most one dimension, and the embeddings). Every trainable parameter is in exactly one group."""
    excluded = {id(p) for p in embedding_parameters(network)}
    decayed, not_decayed = [], []
    for parameter in network.parameters():
        if not parameter.requires_grad:
            continue
        (not_decayed if parameter.ndim <= 1 or id(parameter) in excluded else decayed).append(parameter)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": not_decayed, "weight_decay": 0.0}]


def clot_optimizer(network: nn.Module, num_epochs: int, settings: ClotOptimizerSettings = ClotOptimizerSettings()
                   ) -> Tuple[torch.optim.Optimizer, PolyLRScheduler]:
    """AdamW over `parameter_groups` and nnU-Net's PolyLRScheduler (which sets every group's lr each epoch)."""
    optimizer = torch.optim.AdamW(parameter_groups(network, settings.weight_decay), lr=settings.learning_rate,
                                  betas=settings.betas)
    return optimizer, PolyLRScheduler(optimizer, settings.learning_rate, num_epochs)
