"""Clot trainers for the stock `nnUNetv2_train -tr NAME` / `nnUNetv2_predict -tr NAME`, with plans from
`nnunet_ext_plan_upattllstm` (`-p nnUNetPlans_UpAttLLSTM`, or nnUNetPlans_<model> for the ablations).

nnUNetTrainerUpAttLLSTM: no deep supervision, crops paired with and without a clot, flips on three axes and
Gaussian noise (p = 0.4 each). nnUNetTrainerUpAttLLSTMGradualDrop: the same plus gradual dropout of PHASE
(drop probability 0.5, the paper's schedule); from scratch, or as the paper's fine-tune:
    nnUNetv2_train ... -tr nnUNetTrainerUpAttLLSTMGradualDrop_400epochs -pretrained_weights checkpoint_final.pth
_Nepochs sets num_epochs (default 1000); 8 is for CPU demos, 1 for the tests and the ci profile of
`nnunet_ext_reproduce_clot`. _Kit / _Vvalit set the (validation) iterations per epoch, e.g.
nnUNetTrainerUpAttLLSTM_400epochs_16it_2valit (built on demand by variants_on_demand.py).
"""
from nnunet_ext.training.variants import trainer_variant

nnUNetTrainerUpAttLLSTM = trainer_variant("nnUNetTrainerUpAttLLSTM")
nnUNetTrainerUpAttLLSTM_400epochs = trainer_variant("nnUNetTrainerUpAttLLSTM_400epochs")
nnUNetTrainerUpAttLLSTM_100epochs = trainer_variant("nnUNetTrainerUpAttLLSTM_100epochs")
nnUNetTrainerUpAttLLSTM_8epochs = trainer_variant("nnUNetTrainerUpAttLLSTM_8epochs")
nnUNetTrainerUpAttLLSTM_1epochs = trainer_variant("nnUNetTrainerUpAttLLSTM_1epochs")

# gradual modality dropout of PHASE, drop probability 0.5 (the paper's thrombus setting)
nnUNetTrainerUpAttLLSTMGradualDrop = trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop")
nnUNetTrainerUpAttLLSTMGradualDrop_400epochs = trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop_400epochs")
nnUNetTrainerUpAttLLSTMGradualDrop_8epochs = trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop_8epochs")
nnUNetTrainerUpAttLLSTMGradualDrop_100epochs = trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop_100epochs")
nnUNetTrainerUpAttLLSTMGradualDrop_1epochs = trainer_variant("nnUNetTrainerUpAttLLSTMGradualDrop_1epochs")
