"""Shared fixture: a tiny synthetic cohort, planned and preprocessed by the stock nnU-Net, with CPU plans."""
import glob
import importlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.experiments.workspace import TrainedModel, Workspace

DATASET_ID = "501"
CPU_PLANS = "nnUNetPlans_CPU"
TRAINER = "nnUNetTrainerGradualDrop_p05_8epochs_3it_1valit"  # a small CPU budget, in the name
BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")


def load_benchmark_module(name: str):
    """A module of benchmarks/ (a folder of scripts, not a package: a script's own folder is on its sys.path)."""
    sys.path.insert(0, BENCHMARKS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCHMARKS)


@pytest.fixture(scope="session")
def benchmark_module():
    """load_benchmark_module, for tests of the benchmarks' functions."""
    return load_benchmark_module


class NnunetWorkspace:
    """The library's Workspace (its folders, environment and nnU-Net commands) with a small CPU budget, and a
    `run` that returns the command's output for the tests to read."""

    def __init__(self, root: str):
        # no worker processes, no torch.compile (the Workspace's default); nothing of the calling shell's settings
        self.nnunet = Workspace(root, {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"},
                                unset=("NNUNET_EXT_DROPPABLE_CHANNELS", "NNUNET_EXT_SAVE_EVERY", "NNUNET_EXT_SEED"))
        self.root, self.paths, self.env = root, self.nnunet.paths, self.nnunet.env
        self.raw_dataset = None

    def run(self, command, extra_env=None, check=True, timeout=900):
        env = {**self.env, **(extra_env or {})}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def model(self, trainer: str) -> TrainedModel:
        return TrainedModel(int(DATASET_ID), "Dataset501_SyntheticStroke", trainer, CPU_PLANS, fold=0)

    def results_folder(self, trainer: str) -> str:
        return os.path.dirname(self.nnunet.fold_folder(self.model(trainer)))

    def train_command(self, trainer: str, *extra: str):
        return Workspace.train_command(self.model(trainer)) + list(extra)


@pytest.fixture(scope="session")
def nnunet_workspace(tmp_path_factory) -> NnunetWorkspace:
    workspace = NnunetWorkspace(str(tmp_path_factory.mktemp("nnunet")))
    spec = CohortSpec(train_per_center=3, test_per_center=1, size=32, seed=0)
    workspace.raw_dataset = write_cohort(spec, workspace.paths["nnUNet_raw"], progress=False)
    workspace.nnunet.plan_and_preprocess(int(DATASET_ID), verify=True)
    workspace.nnunet.run(["nnunet_ext_plan_cpu", "-d", DATASET_ID], "plan_cpu")
    return workspace


def _logs(fold_folder):
    return sorted(glob.glob(os.path.join(fold_folder, "training_log_*.txt")), key=os.path.getmtime)


def _wait_for_line(fold_folder, pattern, process, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for log in _logs(fold_folder):
            if re.search(pattern, open(log).read(), re.MULTILINE):
                return
        if process.poll() is not None:
            raise AssertionError(f"training ended before {pattern!r}:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not logged within {timeout} s")


@pytest.fixture(scope="session")
def resumed_run(nnunet_workspace):
    """A trained model of TRAINER on the CPU plans, for every test that needs one.

    The run is killed after a few epochs (as a crash would) and continued with --c in a changed environment,
    which must not change its settings; test_nnunet_integration checks that."""
    fold = os.path.join(nnunet_workspace.results_folder(TRAINER), "fold_0")
    env = {**nnunet_workspace.env, "NNUNET_EXT_SAVE_EVERY": "1"}
    process = subprocess.Popen(nnunet_workspace.train_command(TRAINER), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # "Epoch 3" is logged after the checkpoint of epoch 2 has been written completely
        _wait_for_line(fold, r"Epoch 3\s*$", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not os.path.exists(os.path.join(fold, "checkpoint_final.pth"))
    interrupted_at = torch.load(os.path.join(fold, "checkpoint_latest.pth"), weights_only=False)["current_epoch"]
    first_log = _logs(fold)[-1]
    time.sleep(1.1)  # nnU-Net names logs by the second
    resumed = nnunet_workspace.run(nnunet_workspace.train_command(TRAINER, "--c"),
                                   {"NNUNET_EXT_DROPPABLE_CHANNELS": "B0", "NNUNET_EXT_SAVE_EVERY": "4"})
    return {"fold": fold, "interrupted_at": interrupted_at, "first_log": open(first_log).read(),
            "resumed_log": open(_logs(fold)[-1]).read(), "stdout": resumed.stdout}
