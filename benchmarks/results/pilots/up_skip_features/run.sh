#!/bin/bash
# UpAttLLSTM pilots on the validation split: the Up block's full-resolution skip features 12 -> 3 and 12 -> 6,
# otherwise run 1 of quick_hard_400 exactly (seed 3, fold 0, 400 epochs x 16 iterations); one core each.
# The workdir links run 1's preprocessed data (/tmp/pilot_clot) and adds the two plans (skip3 beside this file;
# skip6 differs only in skip_features and plans_name).
source /work/main/.venv/bin/activate
# The committed logs were trained as nnUNetTrainerUpAttLLSTM_400epochs with NNUNET_EXT_ITERATIONS_PER_EPOCH=16 and
# NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH=2; the trainer name spells the same settings now (the variables are refused).
P=/tmp/pilot_skip
export nnUNet_raw=$P/nnUNet_raw nnUNet_preprocessed=$P/nnUNet_preprocessed nnUNet_results=$P/nnUNet_results
export nnUNet_compile=false NNUNET_EXT_FINAL_VALIDATION=0
export NNUNET_EXT_SEED=3 nnUNet_n_proc_DA=1 nnUNet_extTrainer=/work/main/trainers
date
taskset -c 0 nnUNetv2_train 531 3d_fullres 0 -p nnUNetPlans_UpAttLLSTM_s8_skip3 -tr nnUNetTrainerUpAttLLSTM_400epochs_16it_2valit -device cpu > $P/skip3.log 2>&1 &
taskset -c 1 nnUNetv2_train 531 3d_fullres 0 -p nnUNetPlans_UpAttLLSTM_s8_skip6 -tr nnUNetTrainerUpAttLLSTM_400epochs_16it_2valit -device cpu > $P/skip6.log 2>&1 &
wait
date
