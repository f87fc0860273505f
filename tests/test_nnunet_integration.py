"""The stock nnU-Net commands with our trainers, on the tiny synthetic cohort and CPU plans."""
import json
import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.evaluation.folders import dice_per_case

from conftest import TRAINER

PAPER_8_EPOCHS = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]


def _factors_by_epoch(log_text):
    found = re.findall(r"f\(t\) = ([0-9.e-]+) at epoch (\d+)/8, drop probability 0.5 on (\w+)", log_text)
    return {int(epoch): (float(factor), channel) for factor, epoch, channel in found}


def test_first_run_follows_the_schedule_until_killed(resumed_run):
    factors = _factors_by_epoch(resumed_run["first_log"])
    # killed as soon as "Epoch 3" is logged: epoch 3's own line may or may not have been written by then
    assert {0, 1, 2} <= set(factors) <= {0, 1, 2, 3}
    for epoch, (factor, channel) in factors.items():
        assert factor == PAPER_8_EPOCHS[epoch] and channel == "ADC"
    assert re.search(r"dropped fraction this epoch \{'ADC': [0-9.]+\} over 6 samples", resumed_run["first_log"])


def test_continue_resumes_the_schedule_where_it_stopped_with_the_stored_settings(resumed_run):
    start = resumed_run["interrupted_at"]
    assert 3 <= start < 8
    log = resumed_run["resumed_log"]
    assert "continuing with the settings this run started with" in log
    epochs = [int(e) for e in re.findall(r"Epoch (\d+)\s*$", log, re.MULTILINE)]
    assert epochs == list(range(start, 8))
    factors = _factors_by_epoch(log)
    assert sorted(factors) == list(range(start, 8))
    for epoch, (factor, channel) in factors.items():
        assert factor == PAPER_8_EPOCHS[epoch] and channel == "ADC"  # not B0 from the changed environment
    # still 3 iterations x batch 2 per epoch, as stored, not the 4 the environment now asks for
    assert re.search(r"over 6 samples", log) and not re.search(r"over 8 samples", log)
    assert os.path.isfile(os.path.join(resumed_run["fold"], "checkpoint_final.pth"))


def test_settings_and_choice_of_channels_survive_into_the_results_folder(resumed_run, nnunet_workspace):
    folder = nnunet_workspace.results_folder(TRAINER)
    assert json.load(open(os.path.join(folder, "dataset.json")))["droppable_channels"] == ["ADC"]
    stored = json.load(open(os.path.join(resumed_run["fold"], "nnunet_ext_settings.json")))
    assert stored["settings"]["modality_dropout"]["droppable_names"] == ["ADC"]
    assert stored["settings"]["num_epochs"] == 8 and stored["settings"]["num_iterations_per_epoch"] == 3
    assert stored["settings"]["num_val_iterations_per_epoch"] == 1
    assert stored["settings"]["save_every"] == 1  # the first run's, not the --c run's environment (4)
    assert "--c" in stored["provenance"]["command"] and stored["provenance"]["seed"] == 12345


def test_predict_with_adc_missing_and_with_all_channels(resumed_run, nnunet_workspace, tmp_path):
    images = os.path.join(nnunet_workspace.raw_dataset, "imagesTs")
    labels = os.path.join(nnunet_workspace.raw_dataset, "labelsTs")
    common = ["-d", "501", "-c", "3d_fullres", "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", TRAINER,
              "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"]
    missing = nnunet_workspace.run(["nnunet_ext_predict", "-i", images, "-o", str(tmp_path / "no_adc"), *common,
                                    "--missing", "ADC"])
    assert "4 cases, 4 absent channel image(s) zero-filled (ADC)" in missing.stdout
    # the stock predictor itself finds our trainer through nnUNet_extTrainer
    nnunet_workspace.run(["nnUNetv2_predict", "-i", images, "-o", str(tmp_path / "all"), *common])
    for folder in ("no_adc", "all"):
        scores = dice_per_case(str(tmp_path / folder), labels)
        assert sorted(scores) == ["stroke_A_003", "stroke_B_003", "stroke_C_003", "stroke_D_003"]
        assert all(0.0 <= s <= 1.0 for s in scores.values())
        for case in scores:
            prediction = sitk.ReadImage(str(tmp_path / folder / f"{case}.nii.gz"))
            reference = sitk.ReadImage(os.path.join(labels, f"{case}.nii.gz"))
            assert prediction.GetSize() == reference.GetSize()
            assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1}


def test_missing_channel_file_that_is_not_allowed_stops_prediction(resumed_run, nnunet_workspace, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    source = os.path.join(nnunet_workspace.raw_dataset, "imagesTs")
    for name in ("stroke_A_003_0000.nii.gz", "stroke_A_003_0002.nii.gz"):
        os.symlink(os.path.join(source, name), images / name)
    result = nnunet_workspace.run(["nnunet_ext_predict", "-i", str(images), "-o", str(tmp_path / "out"), "-d", "501",
                                   "-c", "3d_fullres", "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", TRAINER,
                                   "-device", "cpu"], check=False)
    assert result.returncode == 2
    assert "stroke_A_003: missing file for ADC" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("droppable,message", [
    ("ADC2", "unknown modality 'ADC2'; dataset.json has DWI, ADC, B0"),
    ("ADC,ADC", "listed twice: ADC"),
    ("DWI,ADC,B0", "every channel (DWI, ADC, B0) is droppable"),
])
def test_bad_droppable_channels_stop_the_stock_trainer_at_start_up(nnunet_workspace, droppable, message):
    trainer = "nnUNetTrainerMultiUnet_p02_8epochs"
    result = nnunet_workspace.run(nnunet_workspace.train_command(trainer),
                                  {"NNUNET_EXT_DROPPABLE_CHANNELS": droppable}, check=False, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert not os.path.exists(nnunet_workspace.results_folder(trainer))  # nothing half-written


def test_predict_with_b0_rebuilt_by_physics_says_how_per_case(resumed_run, nnunet_workspace, tmp_path):
    """--missing B0 --rebuild B0 through the stock predictor: every case's B0 is discarded and rebuilt from its
    DWI and ADC (center D, whose B0 is a zero image, included), and the report says how."""
    images = os.path.join(nnunet_workspace.raw_dataset, "imagesTs")
    labels = os.path.join(nnunet_workspace.raw_dataset, "labelsTs")
    result = nnunet_workspace.run(["nnunet_ext_predict", "-i", images, "-o", str(tmp_path / "rebuilt"), "-d", "501",
                                   "-c", "3d_fullres", "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", TRAINER,
                                   "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0", "--missing", "B0",
                                   "--rebuild", "B0", "--b-value", "900"])
    assert "4 cases, 0 absent channel image(s) zero-filled (B0), 4 rebuilt by physics (B0)" in result.stdout
    report = json.load(open(tmp_path / "rebuilt" / "nnunet_ext_predict.json"))
    assert sorted(report["rebuilt"]) == ["stroke_A_003", "stroke_B_003", "stroke_C_003", "stroke_D_003"]
    record = report["rebuilt"]["stroke_D_003"]["B0"]
    assert record["b_value"] == 900.0 and record["b_value_from"] == "--b-value"
    assert record["sources"] == ["DWI", "ADC"] and record["equation"] == "B0 = DWI * exp(b * ADC)"
    assert report["zero_filled"] == {} and report["warnings"] == []
    scores = dice_per_case(str(tmp_path / "rebuilt"), labels)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores.values())
