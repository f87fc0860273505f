#!/bin/bash
# Pilot: is UpAttLLSTM's validation collapse a measurement of the one validation case? (validation split only;
# rule in README.md, committed before this ran). The recipe's UpAttLLSTM (run 1's seed and plans, 6 skip features)
# trained on 12 of the 16 non-test cases and validated on 4: every fourth case of the sorted list (clot_A_000,
# clot_A_004, clot_B_000, clot_B_004), fixed before the training. One CPU core (${PILOT_CPU:-0}).
# The workdir links the rerun's raw data and preprocessed files (/tmp/pilot_clot) except splits_final.json, which is
# its own; the trainers are imported from a checkout of the pilot's commit (TREE), not from a working copy.
set -e
TREE=${TREE:-/tmp/wt_vsplit}
P=${P:-/tmp/pilot_vsplit}
SOURCE=/tmp/pilot_clot/nnUNet_preprocessed/Dataset531_ClotTrainAB
source /work/main/.venv/bin/activate
mkdir -p $P/nnUNet_results $P/nnUNet_preprocessed/Dataset531_ClotTrainAB
ln -sfn /tmp/pilot_clot/nnUNet_raw $P/nnUNet_raw
for f in $SOURCE/*; do
    [ "$(basename $f)" = splits_final.json ] || ln -sfn $f $P/nnUNet_preprocessed/Dataset531_ClotTrainAB/
done
python - $P/nnUNet_preprocessed/Dataset531_ClotTrainAB/splits_final.json <<'PY'
import json, sys
cases = [f"clot_{c}_{i:03d}" for c in "AB" for i in range(8)]
val = sorted(cases)[::4]
json.dump([{"train": [c for c in sorted(cases) if c not in val], "val": val}], open(sys.argv[1], "w"), indent=1)
print("validation cases:", val)
PY
export PYTHONPATH=$TREE nnUNet_extTrainer=$TREE/trainers
export nnUNet_raw=$P/nnUNet_raw nnUNet_preprocessed=$P/nnUNet_preprocessed nnUNet_results=$P/nnUNet_results
export nnUNet_compile=false NNUNET_EXT_FINAL_VALIDATION=0 nnUNet_n_proc_DA=1
TR=nnUNetTrainerUpAttLLSTM_400epochs_16it_2valit
date
NNUNET_EXT_SEED=3 taskset -c ${PILOT_CPU:-0} nnUNetv2_train 531 3d_fullres 0 -p nnUNetPlans_UpAttLLSTM_s8 -tr $TR \
    -device cpu > $P/UpAttLLSTM_fold0.log 2>&1
date
