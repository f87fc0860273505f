#!/bin/bash
set -e
cd "$(dirname "$0")/../../.."  # the repository root
python3 -c "
from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.experiments.settings import PROFILES
q = PROFILES['quick']
print(write_cohort(CohortSpec(dataset_id=510, name='SyntheticStrokeSource', size=q.size, train_per_center=q.train_per_center, test_per_center=q.test_per_center, seed=q.seed, shine_through_dwi=1.3, lesion_b0=q.lesion_b0), '/tmp/t2pilot_src', progress=False))
"
nnunet_ext_reproduce --table 2 --profile quick --workdir /tmp/t2pilot --source /tmp/t2pilot_src/Dataset510_SyntheticStrokeSource --methods none --runs 1 --out /tmp/t2pilot/table2
python3 benchmarks/dwi_only_ceiling.py --workdir /tmp/t2pilot --fold 0 --out /tmp/t2pilot/ceiling
date
