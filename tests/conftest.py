"""Shared fixture: a tiny synthetic cohort, planned and preprocessed by the stock nnU-Net, with CPU plans."""
import os
import subprocess

import pytest

from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.paths import nnunet_environment

DATASET_ID = "501"
CPU_PLANS = "nnUNetPlans_CPU"


class NnunetWorkspace:
    def __init__(self, root: str):
        self.root = root
        self.paths = {name: os.path.join(root, name) for name in ("nnUNet_raw", "nnUNet_preprocessed",
                                                                  "nnUNet_results")}
        self.raw_dataset = None
        # small CPU budget; no worker processes, no torch.compile
        self.env = nnunet_environment(**self.paths, nnUNet_compile="false", nnUNet_n_proc_DA="0",
                                      nnUNet_def_n_proc="1", NNUNET_EXT_ITERATIONS_PER_EPOCH="3",
                                      NNUNET_EXT_VAL_ITERATIONS_PER_EPOCH="1")
        for variable in ("NNUNET_EXT_DROPPABLE_CHANNELS", "NNUNET_EXT_SAVE_EVERY", "NNUNET_EXT_SEED"):
            self.env.pop(variable, None)

    def run(self, command, extra_env=None, check=True, timeout=900):
        env = {**self.env, **(extra_env or {})}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def results_folder(self, trainer: str) -> str:
        return os.path.join(self.paths["nnUNet_results"], "Dataset501_SyntheticStroke",
                            f"{trainer}__{CPU_PLANS}__3d_fullres")

    def train_command(self, trainer: str, *extra: str):
        return ["nnUNetv2_train", DATASET_ID, "3d_fullres", "0", "-p", CPU_PLANS, "-tr", trainer, "-device", "cpu",
                *extra]


@pytest.fixture(scope="session")
def nnunet_workspace(tmp_path_factory) -> NnunetWorkspace:
    workspace = NnunetWorkspace(str(tmp_path_factory.mktemp("nnunet")))
    spec = CohortSpec(train_per_center=3, test_per_center=1, size=32, seed=0)
    workspace.raw_dataset = write_cohort(spec, workspace.paths["nnUNet_raw"], progress=False)
    workspace.run(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres",
                   "--verify_dataset_integrity", "-np", "2"],
                  {"nnUNet_n_proc_DA": "2"})  # the planner calls torch.set_num_threads(n_proc_DA)
    workspace.run(["nnunet_ext_plan_cpu", "-d", DATASET_ID])
    return workspace
