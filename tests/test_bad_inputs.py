"""Bad input a hostile new user tried (issue 15): each gets a clear error naming the problem, or the documented
behaviour, and leaves nothing half-written. Tiny hand-built images, CLI main functions called in process."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_ext.cli import predict_missing
from nnunet_ext.cli.convert import main as convert_main
from nnunet_ext.cli.evaluate import main as evaluate_main
from nnunet_ext.cli.generate_cohort import main as generate_main
from nnunet_ext.data import staging
from nnunet_ext.data.converters import convert_jhu
from nnunet_ext.data.nifti import ImageFileError, read_image_checked
from nnunet_ext.data.splits import write_json_files
from nnunet_ext.data.staging import clean_stale_staging, staged_dataset_folder
from nnunet_ext.evaluation.evaluate import EvaluationSettings, write_results
from nnunet_ext.training.environment import RESUME_WITH_CURRENT_SETTINGS
from nnunet_ext.training.ext_trainer import CHECKPOINT_KEY, SETTINGS_FILE
from nnunet_ext.training.variants import trainer_variant

from conftest import TRAINER

CHANNELS = ("DWI", "ADC", "B0")
SHAPE = (4, 5, 6)


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=str(path).endswith(".gz"))


def _truncate(path, keep=0.6):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * keep)])


def _random(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).uniform(1, 2, shape).astype(np.float32)


def _cube(value=1):
    array = np.zeros((8, 8, 8), np.uint8)
    array[2:5, 2:5, 2:5] = value
    return array


# ------------------------------------------------------------------------- 1, 2: whole files, finite voxels

@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha"])
def test_a_truncated_image_is_an_error_naming_the_file(tmp_path, ending):
    path = str(tmp_path / f"adc{ending}")
    _write(path, _random(shape=(20, 30, 40)))
    _truncate(path)
    with pytest.raises(ImageFileError, match=f"{path}: .*(incomplete|unreadable)"):
        read_image_checked(path)


def test_a_gzip_stream_cut_in_its_trailer_is_an_error(tmp_path):
    path = str(tmp_path / "adc.nii.gz")
    _write(path, _random())
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-4])  # voxels complete, length field gone: still not the file that was written
    with pytest.raises(ImageFileError, match="incomplete or corrupt gzip stream"):
        read_image_checked(path)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("value,message", [(np.nan, "1 NaN voxel"), (np.inf, "1 infinite voxel"),
                                           (-np.inf, "1 infinite voxel")])
def test_non_finite_voxels_are_found_in_every_format(tmp_path, ending, value, message):
    array = _random()
    array[1, 2, 3] = value
    path = str(tmp_path / f"adc{ending}")
    _write(path, array)
    with pytest.raises(ImageFileError, match=f"{path}: {message}"):
        read_image_checked(path)
    assert read_image_checked(path, require_finite=False).GetSize() == SHAPE[::-1]


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha"])
def test_a_finite_value_whose_square_overflows_float32_is_refused(tmp_path, ending):
    """1e30 is finite, but nnU-Net's z-score normalisation squares it in float32 (inf): the case was predicted from
    garbage without an error. The limit is sqrt(float32 max) = 1.84e19; 1e19 still passes."""
    array = _random()
    array[1, 2, 3], array[0, 0, 0] = 1e30, -2e19
    path = str(tmp_path / f"dwi{ending}")
    _write(path, array)
    with pytest.raises(ImageFileError, match=f"{path}: 2 voxel\\(s\\) with \\|value\\| > 1.8e\\+19 \\(their square "
                                             "overflows float32"):
        read_image_checked(path)
    array[1, 2, 3], array[0, 0, 0] = 1e19, -1e19
    _write(path, array)
    assert read_image_checked(path).GetSize() == SHAPE[::-1]


def test_a_fifo_or_a_folder_is_refused_before_it_is_opened(tmp_path):
    """Opening a FIFO blocks until a writer comes: the check must not open it (this test would hang)."""
    fifo = str(tmp_path / "dwi.nii.gz")
    os.mkfifo(fifo)
    with pytest.raises(ImageFileError, match=f"{fifo}: a FIFO, not a regular file"):
        read_image_checked(fifo)
    folder = tmp_path / "adc.nii.gz"
    folder.mkdir()
    with pytest.raises(ImageFileError, match="a directory, not a regular file"):
        read_image_checked(str(folder))
    with pytest.raises(ImageFileError, match="no such file"):
        read_image_checked(str(tmp_path / "none.nii.gz"))
    link = tmp_path / "link.nii.gz"  # a link to a regular file is fine (the harnesses link their inputs)
    _write(str(tmp_path / "real.nii.gz"), _random())
    link.symlink_to(tmp_path / "real.nii.gz")
    assert read_image_checked(str(link)).GetSize() == SHAPE[::-1]


def test_whole_finite_images_read_as_simpleitk_reads_them(tmp_path):
    for ending in (".nii.gz", ".nii", ".mha"):
        path = str(tmp_path / f"dwi{ending}")
        _write(path, _random(), spacing=(1.0, 2.0, 3.0))
        image = read_image_checked(path)
        assert np.array_equal(sitk.GetArrayFromImage(image), _random()) and image.GetSpacing() == (1.0, 2.0, 3.0)


# a fake trained model: enough for nnunet_ext_predict's checks; nnUNetv2_predict itself is replaced below
MODEL_TRAINER = "nnUNetTrainerGradualDrop_p05"


@pytest.fixture
def model(tmp_path, monkeypatch):
    results = tmp_path / "results"
    folder = results / "Dataset591_Fake" / f"{MODEL_TRAINER}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): n for i, n in enumerate(CHANNELS)}, "labels": {"background": 0, "lesion": 1},
        "numTraining": 1, "file_ending": ".nii.gz", "droppable_channels": ["ADC"]}))
    (folder / "fold_0").mkdir()
    torch.save({"network_weights": {}}, str(folder / "fold_0" / "checkpoint_final.pth"))
    (folder / "fold_0" / SETTINGS_FILE).write_text(json.dumps(
        {"settings": {"modality_dropout": {"droppable_names": ["ADC"]}}}))
    monkeypatch.setenv("nnUNet_results", str(results))
    for variable in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.delenv(variable, raising=False)
    calls = []

    def fake_nnunet_predict(command, env=None, **kwargs):
        """nnUNetv2_predict as seen from outside: it creates -o first, then fails on a fold it lacks."""
        calls.append(command)
        output = command[command.index("-o") + 1]
        os.makedirs(output, exist_ok=True)
        folds = command[command.index("-f") + 1:command.index("-f") + 2] if "-f" in command else ["0", "1", "2"]
        if any(not os.path.isfile(folder / f"fold_{f}" / "checkpoint_final.pth") for f in folds):
            return subprocess.CompletedProcess(command, 1)
        staged = command[command.index("-i") + 1]
        for case in sorted({f.rsplit("_", 1)[0] for f in os.listdir(staged)}):  # one mask per case, as nnU-Net
            _write(os.path.join(output, f"{case}.nii.gz"), np.zeros(SHAPE, np.uint8))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(predict_missing.subprocess, "run", fake_nnunet_predict)
    return {"folder": folder, "calls": calls}


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    for case in ("a", "b"):
        for channel in range(3):
            _write(folder / f"{case}_{channel:04d}.nii.gz", _random(channel))
    return folder


def _predict(images, output, *extra):
    return predict_missing.run(["-i", str(images), "-o", str(output), "-d", "591", "-c", "3d_fullres",
                                "-tr", MODEL_TRAINER, "-f", "0", *extra])


def _refused(capsys, code):
    assert code == 2
    return capsys.readouterr().err


def test_predict_runs_on_good_input_and_writes_a_report(model, images, tmp_path):
    assert _predict(images, tmp_path / "out", "--missing", "ADC") == 0
    report = json.loads((tmp_path / "out" / predict_missing.REPORT_FILE).read_text())
    assert report["zero_filled"] == {"a": ["ADC"], "b": ["ADC"]} and report["warnings"] == []
    assert report["trained_to_drop"] == ["ADC"]


@pytest.mark.parametrize("damage,message", [
    (lambda path: _truncate(path), "incomplete or corrupt gzip stream"),
    (lambda path: _write(path, np.where(np.arange(120).reshape(SHAPE) == 7, np.nan, 1.0).astype(np.float32)),
     "1 NaN voxel"),
    (lambda path: _write(path, np.where(np.arange(120).reshape(SHAPE) == 7, np.inf, 1.0).astype(np.float32)),
     "1 infinite voxel"),
])
def test_predict_refuses_a_truncated_or_non_finite_image(model, images, tmp_path, capsys, damage, message):
    damage(str(images / "b_0001.nii.gz"))
    stderr = _refused(capsys, _predict(images, tmp_path / "out"))
    assert f"b ADC: {images / 'b_0001.nii.gz'}: " in stderr and message in stderr
    assert not (tmp_path / "out").exists() and model["calls"] == []


def test_predict_refuses_an_infinite_voxel_in_an_mha_input(model, tmp_path, capsys):
    dataset_json = model["folder"] / "dataset.json"
    dataset_json.write_text(json.dumps({**json.loads(dataset_json.read_text()), "file_ending": ".mha"}))
    for channel in range(3):
        array = _random(channel)
        if channel == 1:
            array[0, 0, 0] = np.inf
        _write(tmp_path / "in" / f"a_{channel:04d}.mha", array)
    stderr = _refused(capsys, _predict(tmp_path / "in", tmp_path / "out"))
    assert "a ADC: " in stderr and "1 infinite voxel(s)" in stderr and not (tmp_path / "out").exists()


def test_convert_skips_a_truncated_or_nan_source_naming_the_file(tmp_path):
    root = tmp_path / "jhu"
    for subject in ("S01", "S02", "S03"):
        for part in ("DWI", "ADC", "B0"):
            _write(root / subject / f"{subject}_{part}.nii.gz", _random())
        _write(root / subject / f"{subject}_mask.nii.gz", np.ones(SHAPE, np.uint8))
    _truncate(str(root / "S02" / "S02_ADC.nii.gz"))
    nan = _random()
    nan[0, 0, 0] = np.nan
    _write(root / "S03" / "S03_DWI.nii.gz", nan)
    report = convert_jhu(str(root), str(tmp_path / "raw"), 530)
    assert report.converted == ["S01"]
    reasons = {entry["case"]: entry["reason"] for entry in report.skipped}
    assert f"{root / 'S02' / 'S02_ADC.nii.gz'}: incomplete or corrupt gzip stream" in reasons["S02"]
    assert f"{root / 'S03' / 'S03_DWI.nii.gz'}: 1 NaN voxel(s)" in reasons["S03"]


def test_evaluate_refuses_a_truncated_prediction(tmp_path):
    for folder in ("pred", "ref"):
        _write(tmp_path / folder / "a1.nii.gz", np.tile(_cube(), (4, 4, 4)))  # big enough to truncate mid-voxels
    _truncate(str(tmp_path / "pred" / "a1.nii.gz"))
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(tmp_path / "out"), "--quiet"])
    assert f"a1: prediction {tmp_path / 'pred' / 'a1.nii.gz'}: incomplete" in str(stop.value.code)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- 3: dataset id reuse

@pytest.mark.parametrize("arguments", [["--kind", "clot", "-d", "501"], ["--name", "Other"]])
def test_generate_cohort_refuses_a_dataset_id_used_under_another_name(tmp_path, arguments):
    raw = tmp_path / "raw"
    (raw / "Dataset501_SyntheticStroke").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        generate_main(["--raw", str(raw), "--size", "24", "--train-per-center", "1", "--test-per-center", "1",
                       *arguments])
    assert "dataset id 501 is already used by" in str(stop.value.code)
    assert "Dataset501_SyntheticStroke; choose another id" in str(stop.value.code)
    assert os.listdir(raw) == ["Dataset501_SyntheticStroke"]


# ------------------------------------------------------------------------------- 4: --allow-missing

def test_allow_missing_a_channel_the_model_never_learned_to_drop_is_refused(model, images, tmp_path, capsys):
    os.remove(images / "b_0002.nii.gz")  # b has no B0; the model was trained to drop ADC only
    stderr = _refused(capsys, _predict(images, tmp_path / "out", "--allow-missing", "B0"))
    assert "--allow-missing B0: the model was not trained to drop B0 (it was trained to drop: ADC)" in stderr
    assert "--allow-untrained-missing" in stderr
    assert not (tmp_path / "out").exists() and model["calls"] == []


def test_allow_untrained_missing_zero_fills_with_a_warning_in_the_report(model, images, tmp_path, capsys):
    os.remove(images / "b_0002.nii.gz")
    assert _predict(images, tmp_path / "out", "--allow-missing", "B0", "--allow-untrained-missing") == 0
    report = json.loads((tmp_path / "out" / predict_missing.REPORT_FILE).read_text())
    assert report["zero_filled"] == {"b": ["B0"]}
    assert len(report["warnings"]) == 1 and "B0 zero-filled in 1 case(s) (b)" in report["warnings"][0]
    assert "not trained to drop it" in capsys.readouterr().err


def test_allow_missing_a_droppable_channel_needs_no_flag(model, images, tmp_path):
    os.remove(images / "b_0001.nii.gz")
    assert _predict(images, tmp_path / "out", "--allow-missing", "ADC") == 0
    assert json.loads((tmp_path / "out" / predict_missing.REPORT_FILE).read_text())["warnings"] == []


# ------------------------------------------------------------------------------- 5: -o is -i

@pytest.mark.parametrize("through_link", [False, True])
def test_predict_into_its_own_input_folder_is_refused(model, images, tmp_path, capsys, through_link):
    output = images
    if through_link:
        output = tmp_path / "link"
        os.symlink(images, output)
    before = sorted(os.listdir(images))
    stderr = _refused(capsys, _predict(images, output))
    assert f"the output folder {output} is the input folder" in stderr
    assert sorted(os.listdir(images)) == before and model["calls"] == []


# ------------------------------------------------------------------------------- 6: settings in checkpoints

@pytest.fixture
def make_trainer(nnunet_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", nnunet_workspace.paths["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    for variable in ("NNUNET_EXT_DROPPABLE_CHANNELS", RESUME_WITH_CURRENT_SETTINGS):
        monkeypatch.delenv(variable, raising=False)
    folder = os.path.join(nnunet_workspace.paths["nnUNet_preprocessed"], "Dataset501_SyntheticStroke")
    plans = json.load(open(os.path.join(folder, "nnUNetPlans_CPU.json")))
    dataset_json = json.load(open(os.path.join(folder, "dataset.json")))

    def make(continue_training):
        return trainer_variant(TRAINER)(plans={**plans, "continue_training": continue_training},
                                        configuration="3d_fullres", fold=0, dataset_json=dataset_json,
                                        device=torch.device("cpu"))
    return make


@pytest.fixture
def interrupted_run(make_trainer):
    """A run that dropped ADC, with its checkpoint and settings file, as a killed training leaves them."""
    trainer = make_trainer(False)
    trainer.initialize()
    trainer.write_settings_file()
    checkpoint = os.path.join(trainer.output_folder, "checkpoint_latest.pth")
    trainer.save_checkpoint(checkpoint)
    return {"checkpoint": checkpoint, "settings": os.path.join(trainer.output_folder, SETTINGS_FILE)}


def test_checkpoints_carry_the_settings_and_win_when_the_settings_file_is_gone(make_trainer, interrupted_run,
                                                                             monkeypatch):
    stored = torch.load(interrupted_run["checkpoint"], weights_only=False)["init_args"][CHECKPOINT_KEY]
    assert stored["modality_dropout"]["droppable_names"] == ["ADC"]
    os.remove(interrupted_run["settings"])
    monkeypatch.setenv("NNUNET_EXT_DROPPABLE_CHANNELS", "B0")
    resumed = make_trainer(True)
    assert resumed.modality_dropout.droppable_names == ("ADC",)
    assert resumed.ext_settings["modality_dropout"]["droppable_names"] == ["ADC"]


def test_resume_with_a_settings_file_that_disagrees_with_the_checkpoint_stops(make_trainer, interrupted_run,
                                                                              monkeypatch):
    monkeypatch.setenv("NNUNET_EXT_DROPPABLE_CHANNELS", "B0")
    make_trainer(False).write_settings_file()  # another run's settings over this one's
    with pytest.raises(ValueError, match=f"{interrupted_run['settings']} disagrees with the settings stored in "
                                         f".*droppable_names: \\['B0'\\] vs \\['ADC'\\]"):
        make_trainer(True)


def test_resume_without_any_stored_settings_stops_unless_told_otherwise(make_trainer, interrupted_run,
                                                                       monkeypatch):
    checkpoint = torch.load(interrupted_run["checkpoint"], weights_only=False)
    del checkpoint["init_args"][CHECKPOINT_KEY]  # as written before checkpoints carried settings
    torch.save(checkpoint, interrupted_run["checkpoint"])
    os.remove(interrupted_run["settings"])
    monkeypatch.setenv("NNUNET_EXT_DROPPABLE_CHANNELS", "B0")
    with pytest.raises(ValueError, match="carries no nnunet_ext settings and .*nnunet_ext_settings.json is missing"):
        make_trainer(True)
    monkeypatch.setenv(RESUME_WITH_CURRENT_SETTINGS, "1")
    assert make_trainer(True).modality_dropout.droppable_names == ("B0",)


def test_garbage_settings_file_on_resume_is_a_message_naming_it(make_trainer, interrupted_run):
    with open(interrupted_run["settings"], "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match=f"{interrupted_run['settings']} is not a valid nnunet_ext settings file"):
        make_trainer(True)


def test_loading_a_checkpoint_outside_resume_takes_its_settings(make_trainer, interrupted_run, monkeypatch):
    monkeypatch.setenv("NNUNET_EXT_DROPPABLE_CHANNELS", "B0")  # e.g. nnUNetv2_train --val in a changed shell
    trainer = make_trainer(False)
    trainer.load_checkpoint(interrupted_run["checkpoint"])
    assert trainer.modality_dropout.droppable_names == ("ADC",)


# ------------------------------------------------------------------------------- 7: outputs as a set

@pytest.fixture
def evaluation(tmp_path):
    for folder in ("pred", "ref"):
        _write(tmp_path / folder / "a1.nii.gz", _cube())
    out = tmp_path / "out"
    out.mkdir()
    (out / "per_case.csv").write_text("old\n")
    return tmp_path / "pred", tmp_path / "ref", out


def test_evaluate_where_summary_cannot_be_replaced_changes_nothing(evaluation):
    prediction, reference, out = evaluation
    (out / "summary.json").mkdir()  # a folder in the way
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(prediction), str(reference), "-o", str(out), "--quiet"])
    assert f"{out / 'summary.json'} is a folder" in str(stop.value.code)
    assert (out / "per_case.csv").read_text() == "old\n" and sorted(os.listdir(out)) == ["per_case.csv",
                                                                                         "summary.json"]


def test_a_failure_half_way_through_the_renames_puts_the_old_files_back(evaluation, monkeypatch):
    prediction, reference, out = evaluation
    (out / "summary.json").write_text("{}")
    rename = os.rename

    def failing_rename(source, target):
        if str(target).endswith("summary.json") and ".tmp-" in str(source):
            raise OSError(30, "Read-only file system")
        rename(source, target)

    monkeypatch.setattr(staging.os, "rename", failing_rename)
    with pytest.raises(SystemExit):
        evaluate_main([str(prediction), str(reference), "-o", str(out), "--quiet"])
    assert (out / "per_case.csv").read_text() == "old\n" and (out / "summary.json").read_text() == "{}"
    assert sorted(os.listdir(out)) == ["per_case.csv", "summary.json"]  # no temporary left behind


# ------------------------------------------------------------------------------- 8: messages, not tracebacks

def test_predict_with_an_unknown_dataset_id_is_a_message(model, images, tmp_path, capsys):
    code = predict_missing.run(["-i", str(images), "-o", str(tmp_path / "out"), "-d", "599", "-c", "3d_fullres",
                                "-tr", MODEL_TRAINER, "-f", "0"])
    assert "cannot find the model of dataset 599: Could not find a dataset with the ID 599" in _refused(capsys, code)
    assert not (tmp_path / "out").exists()


def test_predict_with_a_fold_that_was_not_trained_is_a_message_and_leaves_nothing(model, images, tmp_path,
                                                                                 capsys):
    code = predict_missing.run(["-i", str(images), "-o", str(tmp_path / "out"), "-d", "591", "-c", "3d_fullres",
                                "-tr", MODEL_TRAINER, "-f", "3"])
    stderr = _refused(capsys, code)
    assert "no checkpoint_final.pth for fold(s) 3 in" in stderr and "folds that have one: 0 (pass -f 0)" in stderr
    assert not (tmp_path / "out").exists() and model["calls"] == []


def test_a_failed_nnunet_predict_removes_the_output_folder_it_created(model, images, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_missing, "check_folds", lambda *args: None)  # a failure the checks cannot foresee
    assert _predict(images, tmp_path / "out", "-f", "4") != 0
    assert not (tmp_path / "out").exists()


@pytest.fixture
def centers_case(tmp_path):
    for folder in ("pred", "ref"):
        _write(tmp_path / folder / "a1.nii.gz", _cube())
    return tmp_path


@pytest.mark.parametrize("content,message", [
    ({"a1": {"occlusion": "proximal", "center": "A"}},
     "case 'a1' maps to {\"occlusion\": \"proximal\", \"center\": \"A\"}, not a center name; the file holds a "
     "record per case: name the field to group by with --group-key (fields: center, occlusion)"),
    ("{garbage", "is not valid JSON"),
    (["a1"], "expected a JSON object mapping case -> center, got a list"),
])
def test_evaluate_centers_file_problems_are_messages_naming_the_file(centers_case, content, message):
    path = centers_case / "centers.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(centers_case / "pred"), str(centers_case / "ref"), "--centers", str(path), "-o",
                       str(centers_case / "out"), "--quiet"])
    assert isinstance(stop.value.code, str) and str(path) in stop.value.code and message in stop.value.code
    assert not (centers_case / "out").exists()


def test_convert_garbage_centers_file_is_a_message_naming_it(tmp_path):
    path = tmp_path / "map.json"
    path.write_text("not json")
    (tmp_path / "jhu" / "S01").mkdir(parents=True)
    with pytest.raises(SystemExit) as stop:
        convert_main(["jhu", str(tmp_path / "jhu"), "-d", "531", "--raw", str(tmp_path / "raw"), "--centers",
                      str(path), "--quiet"])
    assert f"{path} is not valid JSON" in str(stop.value.code)
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------- 9: the umask is respected

@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_datasets_and_result_files_follow_the_umask(tmp_path, umask):
    with staged_dataset_folder(str(tmp_path / "raw"), "Dataset533_Perm") as folder:
        with open(os.path.join(folder, "dataset.json"), "w") as f:
            f.write("{}")
    dataset = tmp_path / "raw" / "Dataset533_Perm"
    assert (dataset.stat().st_mode & 0o777) == 0o777 & ~umask
    write_results(str(tmp_path / "eval"), [], {}, EvaluationSettings(), {})
    write_json_files({str(tmp_path / "splits" / "splits_final.json"): []})
    for path in (tmp_path / "eval" / "per_case.csv", tmp_path / "eval" / "summary.json",
                 tmp_path / "splits" / "splits_final.json"):
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask, path


# ------------------------------------------------------------------------------- 10: stale staging folders

def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_left_by_a_killed_run_is_cleaned_but_a_live_one_is_kept(tmp_path):
    raw = tmp_path / "raw"
    host = staging._HOST
    stale = raw / f".Dataset501_SyntheticStroke.tmp-{host}-{_dead_pid()}-0a1b2c3d"
    live = raw / f".Dataset501_SyntheticStroke.tmp-{host}-{os.getpid()}-0a1b2c3d"
    other_host = raw / f".Dataset501_SyntheticStroke.tmp-elsewhere-{_dead_pid()}-0a1b2c3d"
    other_dataset = raw / f".Dataset502_SyntheticClot.tmp-{host}-{_dead_pid()}-0a1b2c3d"
    interrupted_swap = raw / f".Dataset501_SyntheticStroke.old-{host}-{_dead_pid()}-0a1b2c3d"
    for folder in (stale, live, other_host, other_dataset, interrupted_swap / "dataset"):
        folder.mkdir(parents=True)
    (interrupted_swap / "dataset" / "dataset.json").write_text("{}")
    removed = clean_stale_staging(str(raw), "Dataset501_SyntheticStroke")
    assert sorted(removed) == sorted([str(stale), str(interrupted_swap)])
    assert live.is_dir() and other_host.is_dir() and other_dataset.is_dir() and not stale.exists()
    # the kill came between moving the old dataset aside and renaming the new one in: the old one is back
    assert (raw / "Dataset501_SyntheticStroke" / "dataset.json").read_text() == "{}"


def test_sigterm_during_generate_cohort_leaves_staging_that_the_next_run_cleans(tmp_path):
    raw = tmp_path / "raw"
    process = subprocess.Popen([sys.executable, "-m", "nnunet_ext.cli.generate_cohort", "--raw", str(raw),
                                "--size", "32", "--train-per-center", "6"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (raw.is_dir() and any(name.startswith(".") for name in os.listdir(raw))):
        assert process.poll() is None and time.time() < deadline, "no staging folder appeared"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait()
    left = [name for name in os.listdir(raw) if name.startswith(".")]
    assert len(left) == 1 and f"-{process.pid}-" in left[0]
    generate_main(["--raw", str(raw), "--size", "24", "--train-per-center", "1", "--test-per-center", "1"])
    assert os.listdir(raw) == ["Dataset501_SyntheticStroke"]
    shutil.rmtree(raw)


# ------------------------------------------------------------------------------- issue 26: nothing lost or mixed

def test_a_folder_of_predictions_made_otherwise_is_refused_not_mixed(model, images, tmp_path, capsys):
    """All channels first; then ADC absent into the same OUT: refused (a killed rerun had left 1 new and 3 old
    predictions beside a report saying nothing was absent). The same settings again are fine (a resume)."""
    out = tmp_path / "out"
    assert _predict(images, out) == 0
    report = json.loads((out / predict_missing.REPORT_FILE).read_text())
    assert report["complete"] is True and report["settings"]["missing"] == []
    stderr = _refused(capsys, _predict(images, out, "--missing", "ADC"))
    assert f"the output folder {out} holds the predictions of a complete run made with other settings" in stderr
    assert "missing: [] there, ['ADC'] now" in stderr and len(model["calls"]) == 1
    assert _predict(images, out, "-npp", "1") == 0  # workers do not change what is predicted
    assert len(model["calls"]) == 2


def test_a_killed_run_leaves_a_report_that_says_so_and_only_its_settings_continue(model, images, tmp_path, capsys,
                                                                               monkeypatch):
    out = tmp_path / "out"

    def killed(command, env=None, **kwargs):  # nnU-Net wrote one case, then the machine went down
        open(os.path.join(command[command.index("-o") + 1], "a.nii.gz"), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(predict_missing.subprocess, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        _predict(images, out, "--missing", "ADC")
    report = json.loads((out / predict_missing.REPORT_FILE).read_text())
    assert report["complete"] is False and report["settings"]["missing"] == ["ADC"]
    assert report["zero_filled"] == {"a": ["ADC"], "b": ["ADC"]}  # describes the file beside it
    stderr = _refused(capsys, _predict(images, out, "--continue_prediction"))
    assert "predictions of an interrupted run made with other settings" in stderr


def test_a_folder_with_files_of_unknown_origin_is_refused(model, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"")
    stderr = _refused(capsys, _predict(images, out))
    assert "holds 1 file(s) that nnunet_ext_predict did not write" in stderr and model["calls"] == []


def test_a_nii_among_nii_gz_inputs_is_named_not_skipped(model, images, tmp_path, capsys):
    os.remove(images / "b_0002.nii.gz")
    _write(images / "b_0002.nii", _random(2))
    stderr = _refused(capsys, _predict(images, tmp_path / "out"))
    assert "b_0002.nii: ends in .nii, but the model reads .nii.gz files" in stderr and model["calls"] == []


@pytest.mark.parametrize("shape,message", [((5, 6), "a 2D image; the model was trained on 3D images"),
                                           ((6, 5, 4, 2), "a 4D image; the model was trained on 3D images")])
def test_an_image_of_another_dimension_is_refused(model, images, tmp_path, capsys, shape, message):
    """A 2D image was predicted as one slice without a word; a 4D one failed inside nnU-Net's workers."""
    import nibabel
    (model["folder"] / "plans.json").write_text(json.dumps({"configurations": {"2d": {}, "3d_fullres": {}}}))
    for channel in range(3):
        nibabel.save(nibabel.Nifti1Image(np.ones(shape, np.float32), np.eye(4)),
                     str(images / f"b_{channel:04d}.nii.gz"))
    stderr = _refused(capsys, _predict(images, tmp_path / "out"))
    assert f"b DWI: {message}" in stderr and model["calls"] == []


def test_temporary_copies_of_killed_runs_are_removed_and_sigterm_cleans_up(model, images, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(predict_missing.tempfile, "tempdir", None)  # tempfile caches the folder it found
    (tmp_path / "tmp").mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "tmp" / f"nnunet_ext_predict-{staging._HOST}-{dead.pid}-0123abcd"
    live = tmp_path / "tmp" / f"nnunet_ext_predict-{staging._HOST}-{os.getppid()}-0123abcd"
    for folder in (stale, live):
        (folder / "input").mkdir(parents=True)

    def terminated(command, env=None, **kwargs):
        staged = command[command.index("-i") + 1]
        assert os.path.isdir(staged) and oct(os.stat(os.path.dirname(staged)).st_mode & 0o777) == "0o700"
        predict_missing._raise_terminated(signal.SIGTERM, None)

    monkeypatch.setattr(predict_missing.subprocess, "run", terminated)
    with pytest.raises(SystemExit) as stop:
        _predict(images, tmp_path / "out")
    assert stop.value.code == 128 + signal.SIGTERM
    assert sorted(os.listdir(tmp_path / "tmp")) == [live.name]  # the stale copy and this run's own are gone
    assert not (tmp_path / "out").exists()  # created by this run, nothing predicted: removed


def test_a_checkpoint_cut_short_is_named_before_nnunet_starts(model, images, tmp_path, capsys):
    checkpoint = model["folder"] / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.zeros(1000)}}, str(checkpoint))
    _truncate(str(checkpoint), keep=0.7)
    stderr = _refused(capsys, _predict(images, tmp_path / "out"))
    assert f"{checkpoint} is not a whole checkpoint" in stderr and "cut short" in stderr
    assert model["calls"] == [] and not (tmp_path / "out").exists()


def test_predictions_cut_short_by_a_full_disk_are_an_error_and_the_report_stays_incomplete(model, images, tmp_path,
                                                                                          capsys, monkeypatch):
    def short_write(command, env=None, **kwargs):  # nnU-Net's SimpleITK writer does not raise on a full disk
        output = command[command.index("-o") + 1]
        _write(os.path.join(output, "a.nii.gz"), np.zeros((20, 30, 40), np.uint8))
        _truncate(os.path.join(output, "a.nii.gz"), keep=0.5)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(predict_missing.subprocess, "run", short_write)
    assert _predict(images, tmp_path / "out") == 1
    stderr = capsys.readouterr().err
    assert "these predictions are not whole" in stderr and "a.nii.gz: incomplete" in stderr
    assert f"{tmp_path / 'out' / 'b.nii.gz'}: no such file" in stderr
    assert json.loads((tmp_path / "out" / predict_missing.REPORT_FILE).read_text())["complete"] is False


def test_generate_cohort_refuses_a_name_that_leaves_the_raw_folder(tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(SystemExit) as stop:
        generate_main(["--raw", str(raw), "--size", "24", "--train-per-center", "1", "--test-per-center", "1",
                       "--name", "../../escaped"])
    assert "'Dataset501_../../escaped' is not a folder name" in str(stop.value.code)
    assert not (tmp_path / "escaped").exists() and not any(p.name == "escaped" for p in tmp_path.parent.iterdir())


def test_generate_cohort_on_a_full_disk_is_one_error_line_and_leaves_nothing(tmp_path):
    """Writes beyond 50 kB fail as on a full disk (EFBIG instead of ENOSPC; SIGXFSZ ignored): SimpleITK prints
    'wrote only N of M bytes' and returns, so only the read-back catches it."""
    import resource

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    raw = tmp_path / "raw"
    result = subprocess.run([sys.executable, "-m", "nnunet_ext.cli.generate_cohort", "--raw", str(raw), "--size", "48",
                             "--train-per-center", "1", "--test-per-center", "1"], capture_output=True, text=True,
                            preexec_fn=limited, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: " in result.stderr and "was not written whole (disk full?)" in result.stderr
    assert [e for e in os.listdir(raw) if not e.startswith(".")] == []  # the half-written cohort never published


def test_table_files_on_a_full_disk_keep_their_old_versions_together(tmp_path):
    """A report and its data are replaced together or not at all: the new .md fits, the new .json does not (a
    file-size limit fails the write as a full disk would), and all three files keep the old run's content."""
    import resource
    from nnunet_ext.experiments.records import write_table_files
    prefix = str(tmp_path / "table5")
    write_table_files(prefix, ["# old"], [{"model": "LLSTM", "dice": 0.5}], {"run": "old"})
    old = {suffix: open(f"{prefix}.{suffix}", "rb").read() for suffix in ("md", "csv", "json")}
    assert old == {"md": b"# old", "csv": b"model,dice\r\nLLSTM,0.5\r\n",
                   "json": b'{\n  "run": "old"\n}'}

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    script = ("import sys; from nnunet_ext.experiments.records import write_table_files\n"
              "write_table_files(sys.argv[1], ['# new'], [{'model': 'LLSTM', 'dice': 0.6}], {'run': 'x' * 50_000})")
    result = subprocess.run([sys.executable, "-c", script, prefix], capture_output=True, text=True,
                            preexec_fn=limited, timeout=120)
    assert result.returncode != 0 and "File too large" in result.stderr
    assert {suffix: open(f"{prefix}.{suffix}", "rb").read() for suffix in ("md", "csv", "json")} == old
    assert sorted(os.listdir(tmp_path)) == ["table5.csv", "table5.json", "table5.md"]  # no temporaries left


def test_table_files_with_a_folder_in_the_way_write_nothing(tmp_path):
    from nnunet_ext.experiments.records import write_table_files
    (tmp_path / "table5.json").mkdir()
    with pytest.raises(IsADirectoryError, match="table5.json is a folder; cannot write the file there"):
        write_table_files(str(tmp_path / "table5"), ["# new"], None, {"run": 1}, {"png": b"\x89PNG"})
    assert sorted(os.listdir(tmp_path)) == ["table5.json"]
