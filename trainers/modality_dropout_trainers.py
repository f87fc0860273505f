"""Named modality-dropout trainers for the stock `nnUNetv2_train -tr NAME` / `nnUNetv2_predict -tr NAME`.

Each name spells its settings (`nnunet_ext.training.variants`): family, drop probability _pXY = X.Y (the
paper's "1-p"), _Nepochs (default 1000; 400 is the paper's fine-tuning length with -pretrained_weights;
8 and 100 are for CPU demos and short runs), and _Kit / _Vvalit, the (validation) iterations per epoch (default
250 / 50; e.g. nnUNetTrainerGradualDrop_p05_8epochs_40it_4valit, built on demand by variants_on_demand.py). Droppable channels are chosen by name in dataset.json
("droppable_channels": ["ADC"]) or NNUNET_EXT_DROPPABLE_CHANNELS=ADC.
"""
from nnunet_ext.training.variants import trainer_variant

# gradual dropout, schedule 'paper' f = 1, 0.5, 0.25, 0 over quarters
nnUNetTrainerGradualDrop = trainer_variant("nnUNetTrainerGradualDrop")
nnUNetTrainerGradualDrop_p02 = trainer_variant("nnUNetTrainerGradualDrop_p02")
nnUNetTrainerGradualDrop_p02_400epochs = trainer_variant("nnUNetTrainerGradualDrop_p02_400epochs")
nnUNetTrainerGradualDrop_p02_100epochs = trainer_variant("nnUNetTrainerGradualDrop_p02_100epochs")
nnUNetTrainerGradualDrop_p02_8epochs = trainer_variant("nnUNetTrainerGradualDrop_p02_8epochs")
nnUNetTrainerGradualDrop_p05 = trainer_variant("nnUNetTrainerGradualDrop_p05")
nnUNetTrainerGradualDrop_p05_400epochs = trainer_variant("nnUNetTrainerGradualDrop_p05_400epochs")
nnUNetTrainerGradualDrop_p05_100epochs = trainer_variant("nnUNetTrainerGradualDrop_p05_100epochs")
nnUNetTrainerGradualDrop_p05_8epochs = trainer_variant("nnUNetTrainerGradualDrop_p05_8epochs")
nnUNetTrainerGradualDrop_p08 = trainer_variant("nnUNetTrainerGradualDrop_p08")
nnUNetTrainerGradualDrop_p08_400epochs = trainer_variant("nnUNetTrainerGradualDrop_p08_400epochs")
nnUNetTrainerGradualDrop_p08_100epochs = trainer_variant("nnUNetTrainerGradualDrop_p08_100epochs")
nnUNetTrainerGradualDrop_p08_8epochs = trainer_variant("nnUNetTrainerGradualDrop_p08_8epochs")

# gradual dropout, schedule 'code2025' f = 0.75, 0.5, 0.25, 0
nnUNetTrainerGradualDropCode2025 = trainer_variant("nnUNetTrainerGradualDropCode2025")
nnUNetTrainerGradualDropCode2025_p02 = trainer_variant("nnUNetTrainerGradualDropCode2025_p02")
nnUNetTrainerGradualDropCode2025_p02_400epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p02_400epochs")
nnUNetTrainerGradualDropCode2025_p02_100epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p02_100epochs")
nnUNetTrainerGradualDropCode2025_p02_8epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p02_8epochs")
nnUNetTrainerGradualDropCode2025_p05 = trainer_variant("nnUNetTrainerGradualDropCode2025_p05")
nnUNetTrainerGradualDropCode2025_p05_400epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p05_400epochs")
nnUNetTrainerGradualDropCode2025_p05_100epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p05_100epochs")
nnUNetTrainerGradualDropCode2025_p05_8epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p05_8epochs")
nnUNetTrainerGradualDropCode2025_p08 = trainer_variant("nnUNetTrainerGradualDropCode2025_p08")
nnUNetTrainerGradualDropCode2025_p08_400epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p08_400epochs")
nnUNetTrainerGradualDropCode2025_p08_100epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p08_100epochs")
nnUNetTrainerGradualDropCode2025_p08_8epochs = trainer_variant("nnUNetTrainerGradualDropCode2025_p08_8epochs")

# plain modality dropout (f = 0 throughout)
nnUNetTrainerMultiUnet = trainer_variant("nnUNetTrainerMultiUnet")
nnUNetTrainerMultiUnet_p02 = trainer_variant("nnUNetTrainerMultiUnet_p02")
nnUNetTrainerMultiUnet_p02_400epochs = trainer_variant("nnUNetTrainerMultiUnet_p02_400epochs")
nnUNetTrainerMultiUnet_p02_100epochs = trainer_variant("nnUNetTrainerMultiUnet_p02_100epochs")
nnUNetTrainerMultiUnet_p02_8epochs = trainer_variant("nnUNetTrainerMultiUnet_p02_8epochs")
nnUNetTrainerMultiUnet_p05 = trainer_variant("nnUNetTrainerMultiUnet_p05")
nnUNetTrainerMultiUnet_p05_400epochs = trainer_variant("nnUNetTrainerMultiUnet_p05_400epochs")
nnUNetTrainerMultiUnet_p05_100epochs = trainer_variant("nnUNetTrainerMultiUnet_p05_100epochs")
nnUNetTrainerMultiUnet_p05_8epochs = trainer_variant("nnUNetTrainerMultiUnet_p05_8epochs")
nnUNetTrainerMultiUnet_p08 = trainer_variant("nnUNetTrainerMultiUnet_p08")
nnUNetTrainerMultiUnet_p08_400epochs = trainer_variant("nnUNetTrainerMultiUnet_p08_400epochs")
nnUNetTrainerMultiUnet_p08_100epochs = trainer_variant("nnUNetTrainerMultiUnet_p08_100epochs")
nnUNetTrainerMultiUnet_p08_8epochs = trainer_variant("nnUNetTrainerMultiUnet_p08_8epochs")

# gradual dropout with the exponential reading f = 2^(-4t/T) before 3T/4, then 0 (docs/methods.md §1, §6)
nnUNetTrainerGradualDropExp = trainer_variant("nnUNetTrainerGradualDropExp")

# no dropout, same budget knobs and settings file: the baseline of the experiments
nnUNetTrainerNoDropout = trainer_variant("nnUNetTrainerNoDropout")
nnUNetTrainerNoDropout_400epochs = trainer_variant("nnUNetTrainerNoDropout_400epochs")
nnUNetTrainerNoDropout_100epochs = trainer_variant("nnUNetTrainerNoDropout_100epochs")
nnUNetTrainerNoDropout_8epochs = trainer_variant("nnUNetTrainerNoDropout_8epochs")
nnUNetTrainerNoDropout_1epochs = trainer_variant("nnUNetTrainerNoDropout_1epochs")
