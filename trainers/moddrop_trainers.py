"""ModDrop+ (dynamic first convolution) and ModDrop++ (plus co-training) for the stock nnU-Net commands.

Names as in `nnunet_ext.training.variants`: _pXY is the drop probability X.Y of the channels named in
dataset.json "droppable_channels" (or NNUNET_EXT_DROPPABLE_CHANNELS); _Nepochs sets num_epochs (default 1000);
_Kit / _Vvalit the (validation) iterations per epoch (default 250 / 50; any such name is built on demand).
"""
from nnunet_ext.training.variants import trainer_variant

# dynamic first convolution conditioned on the modality code
nnUNetTrainerModDropPlus = trainer_variant("nnUNetTrainerModDropPlus")
nnUNetTrainerModDropPlus_p02 = trainer_variant("nnUNetTrainerModDropPlus_p02")
nnUNetTrainerModDropPlus_p02_400epochs = trainer_variant("nnUNetTrainerModDropPlus_p02_400epochs")
nnUNetTrainerModDropPlus_p02_100epochs = trainer_variant("nnUNetTrainerModDropPlus_p02_100epochs")
nnUNetTrainerModDropPlus_p02_8epochs = trainer_variant("nnUNetTrainerModDropPlus_p02_8epochs")
nnUNetTrainerModDropPlus_p05 = trainer_variant("nnUNetTrainerModDropPlus_p05")
nnUNetTrainerModDropPlus_p05_400epochs = trainer_variant("nnUNetTrainerModDropPlus_p05_400epochs")
nnUNetTrainerModDropPlus_p05_100epochs = trainer_variant("nnUNetTrainerModDropPlus_p05_100epochs")
nnUNetTrainerModDropPlus_p05_8epochs = trainer_variant("nnUNetTrainerModDropPlus_p05_8epochs")
nnUNetTrainerModDropPlus_p08 = trainer_variant("nnUNetTrainerModDropPlus_p08")
nnUNetTrainerModDropPlus_p08_400epochs = trainer_variant("nnUNetTrainerModDropPlus_p08_400epochs")
nnUNetTrainerModDropPlus_p08_100epochs = trainer_variant("nnUNetTrainerModDropPlus_p08_100epochs")
nnUNetTrainerModDropPlus_p08_8epochs = trainer_variant("nnUNetTrainerModDropPlus_p08_8epochs")

# the same, plus intra-subject co-training (full and dropped batch)
nnUNetTrainerModDropPlusPlus = trainer_variant("nnUNetTrainerModDropPlusPlus")
nnUNetTrainerModDropPlusPlus_p02 = trainer_variant("nnUNetTrainerModDropPlusPlus_p02")
nnUNetTrainerModDropPlusPlus_p02_400epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p02_400epochs")
nnUNetTrainerModDropPlusPlus_p02_100epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p02_100epochs")
nnUNetTrainerModDropPlusPlus_p02_8epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p02_8epochs")
nnUNetTrainerModDropPlusPlus_p05 = trainer_variant("nnUNetTrainerModDropPlusPlus_p05")
nnUNetTrainerModDropPlusPlus_p05_400epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p05_400epochs")
nnUNetTrainerModDropPlusPlus_p05_100epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p05_100epochs")
nnUNetTrainerModDropPlusPlus_p05_8epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p05_8epochs")
nnUNetTrainerModDropPlusPlus_p08 = trainer_variant("nnUNetTrainerModDropPlusPlus_p08")
nnUNetTrainerModDropPlusPlus_p08_400epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p08_400epochs")
nnUNetTrainerModDropPlusPlus_p08_100epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p08_100epochs")
nnUNetTrainerModDropPlusPlus_p08_8epochs = trainer_variant("nnUNetTrainerModDropPlusPlus_p08_8epochs")
