"""Progress lines of running jobs, read from nnU-Net's training logs."""
import os

import pytest

from nnunet_ext.experiments.clot.harness import ClotHarness
from nnunet_ext.experiments.clot.profiles import CLOT_PROFILES
from nnunet_ext.experiments.clot.rows import Network
from nnunet_ext.experiments.jobs import Task, _log_progress, task_progress
from nnunet_ext.experiments.progress import (fold_progress, pseudo_dice_history, training_progress,
                                             validation_course)

# the lines nnU-Net writes, with its timestamps; epoch 2 has started and has no time yet
LOG = """2026-12-05 21:00:00.000001: Epoch 0 
2026-12-05 21:00:00.000002: Current learning rate: 0.001 
2026-12-05 21:00:59.000003: train_loss -0.1 
2026-12-05 21:01:00.000004: Pseudo dice [np.float32(0.0)] 
2026-12-05 21:01:00.000005: Epoch time: 60.0 s 
2026-12-05 21:01:00.000006: Epoch 1 
2026-12-05 21:03:00.000007: Pseudo dice [np.float32(0.4), np.float32(0.6)] 
2026-12-05 21:03:00.000008: Epoch time: 120.0 s 
2026-12-05 21:03:00.000009: Epoch 2 
"""


def test_progress_of_a_training_log():
    progress = training_progress(LOG, epochs=10)
    assert (progress.epoch, progress.pseudo_dice, progress.seconds_per_epoch) == (2, 0.5, 90.0)
    assert progress.seconds_left == 720.0  # 8 epochs to go at (60 + 120) / 2 s
    assert progress.line() == "epoch 2/10, pseudo Dice 0.50, ~12 min left"
    assert training_progress("2026-12-05 21:00:00.000001: Using device cpu\n", 10) is None
    first = training_progress(LOG.split("2026-12-05 21:00:59")[0], 400)
    assert first.line() == "epoch 0/400"  # neither a pseudo Dice nor an epoch time yet


def test_the_clot_harness_names_the_training_a_chain_is_at(tmp_path):
    harness = ClotHarness(str(tmp_path), CLOT_PROFILES["quick"], log=lambda m: None)  # 100 epochs
    up, gradual = Network("UpAttLLSTM", 8), Network("UpAttLLSTMGradualDrop", 8)
    chain = ([up, gradual], 2)
    assert harness.progress_line("train_chain", *chain) == "UpAttLLSTM_s8: starting"
    folder = harness.models.fold_folder(up, 2)
    os.makedirs(folder)
    with open(os.path.join(folder, "training_log_2026_12_5_21_00_00.txt"), "w") as f:
        f.write(LOG)
    assert fold_progress(folder, 1).seconds_left == 0  # a log past its epochs (a longer run's) promises no time
    # 98 epochs to go at 90 s: 147 min
    assert harness.progress_line("train_chain", *chain) == "UpAttLLSTM_s8: epoch 2/100, pseudo Dice 0.50, ~147 min left"
    open(os.path.join(folder, "checkpoint_final.pth"), "w").close()  # trained: the fine-tune is next
    assert harness.progress_line("train_chain", *chain) == "UpAttLLSTMGradualDrop_s8: starting"
    assert harness.progress_line("evaluate_run", {6: None}, None, 2) is None


class _Target:
    def progress_line(self, method, *args):
        if method == "broken":
            raise OSError("log vanished")
        return f"{method} {args[0]}"


def test_progress_is_shown_once_per_change_and_never_fails_the_jobs():
    target, messages, shown = _Target(), [], {}
    running = [Task("a", target, "train", 1), Task("b", target, "broken"), Task("c", object(), "train", 1)]
    assert [task_progress(t) for t in running] == ["train 1", None, None]
    _log_progress(running, shown, messages.append)
    _log_progress(running, shown, messages.append)  # unchanged: not repeated
    running[0].args = (2,)
    _log_progress(running, shown, messages.append)
    assert messages == ["  a: train 1", "  a: train 2"]


def test_the_stroke_harness_says_how_far_a_cell_s_training_is(tmp_path):
    from nnunet_ext.experiments.stroke.harness import Harness
    from nnunet_ext.experiments.stroke.settings import PROFILES, TABLES
    harness = Harness(str(tmp_path), TABLES[2], PROFILES["quick"], log=lambda m: None)
    cell = harness.cells[0]
    assert harness.progress_line("run_cell", cell, 0) == "preparing"  # no dataset yet
    raw = os.path.join(harness.paths["nnUNet_raw"], "Dataset511_Table2_all_centers")
    os.makedirs(raw)
    fold = os.path.join(harness.paths["nnUNet_results"], "Dataset511_Table2_all_centers",
                        f"{cell.trainer(PROFILES['quick'])}__{harness.plans}__3d_fullres", "fold_0")
    os.makedirs(fold)
    with open(os.path.join(fold, "training_log_2026_12_5_21_00_00.txt"), "w") as f:
        f.write(LOG)
    assert PROFILES["quick"].epochs == 8  # 6 epochs to go at 90 s: 9 min
    assert harness.progress_line("run_cell", cell, 0) == "epoch 2/8, pseudo Dice 0.50, ~9 min left"
    assert harness.progress_line("prepare") is None


def test_the_validation_course_of_a_training_over_its_logs():
    # a run continued with --c: its second log repeats epoch 1 (the later value counts) and goes on
    resumed = """2026-12-05 22:00:00.000001: Epoch 1 
2026-12-05 22:00:01.000002: Pseudo dice [np.float32(0.8)] 
2026-12-05 22:00:02.000003: Epoch 2 
2026-12-05 22:00:03.000004: Pseudo dice [np.float32(0.0)] 
2026-12-05 22:00:04.000005: Epoch 3 
2026-12-05 22:00:05.000006: Pseudo dice [np.float32(0.0)] 
2026-12-05 22:00:06.000007: Epoch 4 
2026-12-05 22:00:07.000008: Pseudo dice [np.float32(0.3), np.float32(nan)] 
2026-12-05 22:00:08.000009: Epoch 5 
2026-12-05 22:00:09.000010: Pseudo dice [np.float32(nan)] 
"""
    history = pseudo_dice_history([LOG, resumed])
    assert list(history) == [0, 1, 2, 3, 4] and history[1] == 0.8 and history[0] == 0.0
    assert history[4] == 0.3 and 5 not in history  # nan: a class neither in the batches nor predicted
    history = {0: 0.0, 1: 0.5, 2: 0.8, 3: 0.0, 4: 0.0, 5: 0.4}
    course = validation_course(history, window=3)
    assert (course.best, course.best_epoch, course.zero_after_best) == (0.8, 2, 2)
    assert course.last_mean == pytest.approx(0.4 / 3)
    assert course.text() == "best 0.80 (epoch 2), last 3 epochs 0.13, 2 epochs at 0 after the best"
    assert validation_course({}) is None
