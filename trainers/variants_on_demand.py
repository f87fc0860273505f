"""Every other name of the variant grammar (`nnunet_ext.training.variants`), built when nnU-Net asks for it: e.g.
`nnUNetTrainerModDropPlusPlus_p05_8epochs_w03_mse` or `nnUNetTrainerGradualDrop_p03`. nnU-Net looks a trainer up
with `hasattr(module, name)` in each module of this folder (in name order, so the listed variants answer first);
a module-level __getattr__ answers for the names they do not list."""
from nnunet_ext.training.variants import trainer_variant


def __getattr__(name: str):
    if not name.startswith("nnUNetTrainer"):
        raise AttributeError(name)
    try:
        return trainer_variant(name)
    except ValueError:
        raise AttributeError(name) from None
