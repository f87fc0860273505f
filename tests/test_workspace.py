"""The Workspace's decisions: what it runs for a fresh, an interrupted and a finished training, and for a prediction
with and without its completion marker. Its commands are recorded, not run, here; the harness, demo and fixture
tests run them through the real nnU-Net."""
import json
import os
import socket

import pytest

from nnunet_ext.experiments.workspace import TrainedModel, Workspace

MODEL = TrainedModel(531, "Dataset531_ClotTrainAB", "nnUNetTrainerUpAttLLSTM_400epochs", "nnUNetPlans_UpAttLLSTM_s8",
                     fold=2)


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A Workspace whose commands are recorded (command, log name, extra env) instead of run."""
    workspace = Workspace(str(tmp_path), {"NNUNET_EXT_FINAL_VALIDATION": "0"}, unset=("NNUNET_EXT_SEED",))
    calls = []
    monkeypatch.setattr(workspace, "run", lambda command, log_name, extra_env=None: calls.append(
        (command, log_name, extra_env)))
    return workspace, calls


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()


def test_folders_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NNUNET_EXT_SEED", "7")
    workspace = Workspace(str(tmp_path), {"NNUNET_EXT_SAVE_EVERY": 16}, unset=("NNUNET_EXT_SEED",))
    assert workspace.paths == {name: str(tmp_path / name)
                               for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    assert {k: workspace.env[k] for k in ("nnUNet_raw", "nnUNet_compile", "NNUNET_EXT_SAVE_EVERY")} == {
        "nnUNet_raw": str(tmp_path / "nnUNet_raw"), "nnUNet_compile": "false", "NNUNET_EXT_SAVE_EVERY": "16"}
    assert "NNUNET_EXT_SEED" not in workspace.env and os.environ["NNUNET_EXT_SEED"] == "7"
    assert workspace.fold_folder(MODEL) == str(
        tmp_path / "nnUNet_results" / "Dataset531_ClotTrainAB" /
        "nnUNetTrainerUpAttLLSTM_400epochs__nnUNetPlans_UpAttLLSTM_s8__3d_fullres" / "fold_2")


def test_a_fresh_training_starts_from_the_pretrained_weights(recorded):
    workspace, calls = recorded
    folder = workspace.train(MODEL, "train_up", "cpu", "/m/checkpoint_best.pth", {"NNUNET_EXT_SEED": "5"})
    assert folder == workspace.fold_folder(MODEL)
    assert calls == [(["nnUNetv2_train", "531", "3d_fullres", "2", "-p", "nnUNetPlans_UpAttLLSTM_s8", "-tr",
                       "nnUNetTrainerUpAttLLSTM_400epochs", "-device", "cpu", "-pretrained_weights",
                       "/m/checkpoint_best.pth"], "train_up", {"NNUNET_EXT_SEED": "5"})]
    assert os.listdir(os.path.join(workspace.root, "locks")) == []  # the lock is released


def test_an_interrupted_training_continues_without_the_pretrained_weights(recorded):
    """nnU-Net refuses --c with -pretrained_weights; the latest checkpoint holds the weights anyway."""
    workspace, calls = recorded
    _touch(os.path.join(workspace.fold_folder(MODEL), "checkpoint_latest.pth"))
    workspace.train(MODEL, "train_up", "cuda", "/m/checkpoint_best.pth")
    assert calls[0][0] == ["nnUNetv2_train", "531", "3d_fullres", "2", "-p", "nnUNetPlans_UpAttLLSTM_s8", "-tr",
                           "nnUNetTrainerUpAttLLSTM_400epochs", "-device", "cuda", "--c"]


def test_a_finished_training_is_not_run_again(recorded):
    workspace, calls = recorded
    _touch(os.path.join(workspace.fold_folder(MODEL), "checkpoint_final.pth"))
    assert workspace.is_trained(MODEL)
    workspace.train(MODEL, "train_up")
    assert calls == []


def test_a_training_another_live_process_holds_is_refused(recorded):
    workspace, calls = recorded
    lock = os.path.join(workspace.root, "locks",
                        "train_531_nnUNetTrainerUpAttLLSTM_400epochs__nnUNetPlans_UpAttLLSTM_s8__3d_fullres_fold2.lock")
    _touch(lock)
    with open(lock, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getppid(), "job": ""}, f)  # pytest's parent: alive
    with pytest.raises(RuntimeError, match=f"in progress in process {os.getppid()}"):
        workspace.train(MODEL, "train_up")
    assert calls == []


def test_a_prediction_is_marked_complete_only_after_its_command(recorded, tmp_path):
    workspace, calls = recorded
    output = str(tmp_path / "pred")
    command = Workspace.predict_command(MODEL, "/in", output, checkpoint="checkpoint_best.pth",
                                        options=["--missing", "PHASE"])
    assert command == ["nnunet_ext_predict", "-i", "/in", "-o", output, "-d", "531", "-c", "3d_fullres", "-f", "2",
                       "-p", "nnUNetPlans_UpAttLLSTM_s8", "-tr", "nnUNetTrainerUpAttLLSTM_400epochs", "-device", "cpu",
                       "-chk", "checkpoint_best.pth", "--disable_tta", "-npp", "0", "-nps", "0", "--missing", "PHASE"]
    prepared = []
    os.makedirs(output)  # as nnunet_ext_predict would leave it

    def failing_run(*args, **kwargs):
        raise RuntimeError("nnunet_ext_predict failed")
    workspace.run = failing_run
    with pytest.raises(RuntimeError, match="failed"):
        workspace.predict(command, "predict_up", lambda: prepared.append("inputs"))
    assert not workspace.is_predicted(output) and prepared == ["inputs"]
    workspace.run = lambda command, log_name, extra_env=None: calls.append((command, log_name))
    assert workspace.predict(command, "predict_up") == output
    assert workspace.is_predicted(output) and calls == [(command, "predict_up")]
    workspace.predict(command, "predict_up", lambda: prepared.append("again"))
    assert len(calls) == 1 and prepared == ["inputs"]  # complete: neither prepared nor run again


def test_plan_and_preprocess_needs_the_raw_dataset_and_runs_once(recorded):
    workspace, calls = recorded
    with pytest.raises(FileNotFoundError, match="no Dataset531_\\* in"):
        workspace.plan_and_preprocess(531)
    os.makedirs(os.path.join(workspace.paths["nnUNet_raw"], "Dataset531_ClotTrainAB"))
    workspace.plan_and_preprocess(531, verify=True)
    assert calls == [(["nnUNetv2_plan_and_preprocess", "-d", "531", "-c", "3d_fullres", "-np", "2",
                       "--verify_dataset_integrity"], "plan_531", {"nnUNet_n_proc_DA": "2"})]
    _touch(os.path.join(workspace.paths["nnUNet_preprocessed"], "Dataset531_ClotTrainAB", "nnUNetPlans.json"))
    workspace.plan_and_preprocess(531)
    assert len(calls) == 1


def test_a_command_s_output_goes_to_its_log_and_to_on_output(tmp_path):
    lines = []
    workspace = Workspace(str(tmp_path), on_output=lines.append)
    workspace.run(["python", "-c", "print('Epoch 1'); print('Epoch 2')"], "echo")
    assert lines == ["Epoch 1\n", "Epoch 2\n"]
    assert open(tmp_path / "logs" / "echo.log").read() == "Epoch 1\nEpoch 2\n"
    assert open(tmp_path / "commands.log").read().rstrip().endswith("python -c 'print('\"'\"'Epoch 1'\"'\"'); "
                                                                     "print('\"'\"'Epoch 2'\"'\"')'")
    with pytest.raises(RuntimeError, match="failed with exit code 3; see .*logs/fails.log"):
        workspace.run(["python", "-c", "import sys; sys.exit(3)"], "fails")
