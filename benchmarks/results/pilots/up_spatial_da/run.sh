#!/bin/bash
# Pilot of nnU-Net's in-plane spatial augmentation for the clot networks (validation split only; rule in README.md,
# committed before this ran). Runs 1 and 2 of quick_hard_400 (fold 0 / seed 3, fold 1 / seed 4) for UpAttLLSTM, run 1
# for AttLLSTM (8 slices), one after the other on CPU core ${PILOT_CPU:-1} (the table rerun holds the other core).
# The workdir links the rerun's raw and preprocessed data (/tmp/pilot_clot) and trains into its own results folder;
# the trainers are imported from a checkout of the pilot's commit (TREE), not from a working copy that may change.
set -e
TREE=${TREE:-/tmp/wt_sda}
P=${P:-/tmp/pilot_sda}
source /work/main/.venv/bin/activate
mkdir -p $P/nnUNet_results
ln -sfn /tmp/pilot_clot/nnUNet_raw $P/nnUNet_raw
ln -sfn /tmp/pilot_clot/nnUNet_preprocessed $P/nnUNet_preprocessed
export PYTHONPATH=$TREE nnUNet_extTrainer=$TREE/trainers
export nnUNet_raw=$P/nnUNet_raw nnUNet_preprocessed=$P/nnUNet_preprocessed nnUNet_results=$P/nnUNet_results
export nnUNet_compile=false NNUNET_EXT_FINAL_VALIDATION=0 nnUNet_n_proc_DA=1
TR=nnUNetTrainerUpAttLLSTMSpatialDA_400epochs_16it_2valit
train() {  # fold seed plans
    echo "$(date) fold $1 seed $2 $3"
    NNUNET_EXT_SEED=$2 taskset -c ${PILOT_CPU:-1} nnUNetv2_train 531 3d_fullres $1 -p $3 -tr $TR -device cpu \
        > $P/$3_fold$1.log 2>&1
}
train 0 3 nnUNetPlans_UpAttLLSTM_s8
train 1 4 nnUNetPlans_UpAttLLSTM_s8
train 0 3 nnUNetPlans_AttLLSTM_s8
date
