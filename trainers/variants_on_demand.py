"""Every other name of the variant grammar (`nnunet_ext.training.variants`), built when nnU-Net asks for it: e.g.
`nnUNetTrainerModDropPlusPlus_p05_8epochs_w03_mse` or `nnUNetTrainerGradualDrop_p03`. nnU-Net looks a trainer up
with `hasattr(module, name)` in each module of this folder (in name order, so the listed variants answer first);
a module-level __getattr__ answers for the names they do not list."""
from functools import lru_cache

from nnunet_ext.training.variants import trainer_variant


@lru_cache(maxsize=None)
def _variant(name: str):
    return trainer_variant(name)  # one class per name, however often nnU-Net asks


def __getattr__(name: str):
    if not name.startswith("nnUNetTrainer"):
        raise AttributeError(name)
    try:
        return _variant(name)
    except ValueError:
        raise AttributeError(name) from None
