"""Folder evaluation: known per-center summaries, refused inputs, and `nnunet_ext_evaluate` on real predictions."""
import csv
import json
import math
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.cli.evaluate import main as evaluate_main
from nnunet_ext.evaluation.evaluate import EvaluationSettings, evaluate_folders
from nnunet_ext.evaluation.folders import dice_per_case

from conftest import TRAINER


def _write(path, array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def _cube(shape=(8, 8, 8), where=np.s_[2:4, 2:4, 2:4], value=1, dtype=np.uint8):
    array = np.zeros(shape, dtype)
    array[where] = value
    return array


@pytest.fixture
def folders(tmp_path):
    """a1: perfect; a2: lesion missed; b1: nothing to find, one false positive; b2: both empty."""
    prediction, reference = tmp_path / "pred", tmp_path / "ref"
    prediction.mkdir()
    reference.mkdir()
    cases = {"a1": (_cube(), _cube()), "a2": (_cube(value=0), _cube()),
             "b1": (_cube(where=np.s_[0, 0, 0:3]), _cube(value=0)), "b2": (_cube(value=0), _cube(value=0))}
    for case, (p, r) in cases.items():
        _write(prediction / f"{case}.nii.gz", p, spacing=(2.0, 1.0, 1.0))
        _write(reference / f"{case}.nii.gz", r, spacing=(2.0, 1.0, 1.0))
    centers = tmp_path / "case_centers.json"
    centers.write_text(json.dumps({"a1": "A", "a2": "A", "b1": "B", "b2": "B", "unused": "C"}))
    return prediction, reference, centers, tmp_path / "out"


def test_summary_per_center_has_known_means_and_the_empty_mask_conventions(folders):
    prediction, reference, centers, out = folders
    evaluate_main([str(prediction), str(reference), "--centers", str(centers), "-o", str(out), "--quiet"])
    summary = json.loads((out / "summary.json").read_text())
    label = summary["metrics"]["1"]
    assert list(label) == ["A", "B", "all"] and summary["cases"] == 4
    assert label["A"]["dice"] == {"mean": 0.5, "std": 0.5, "n": 2}
    assert label["B"]["dice"] == {"mean": 0.5, "std": 0.5, "n": 2}       # b1: one empty -> 0; b2: both -> 1
    assert label["B"]["lesion_f1"] == {"mean": 0.5, "std": 0.5, "n": 2}
    assert label["B"]["detection_rate"] == {"mean": None, "std": None, "n": 0}  # nothing to detect in B
    assert label["all"]["detection_rate"] == {"mean": 0.5, "std": 0.5, "n": 2}
    assert label["A"]["abs_volume_difference_ml"]["mean"] == pytest.approx((0 + 0.016) / 2)  # 8 voxels of 2 mm³
    assert label["all"]["pooled"]["tp"] == 1 and label["all"]["pooled"]["fp"] == 1 and label["all"]["pooled"]["fn"] == 1
    assert label["all"]["pooled"]["fp_size_ml"] == {"count": 1, "median": 0.006, "mean": 0.006, "max": 0.006}
    assert summary["settings"]["matching"]["rule"] == "any" and summary["settings"]["matching"]["connectivity"] == 26
    assert "--centers" in summary["provenance"]["command"] and summary["provenance"]["versions"]["nnunetv2"]

    with open(out / "per_case.csv") as f:
        rows = {row["case"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["a1", "a2", "b1", "b2"]
    assert rows["a2"]["center"] == "A" and float(rows["a2"]["dice"]) == 0.0 and rows["a2"]["fn_sizes_ml"] == "0.016"
    assert math.isnan(float(rows["b2"]["detection_rate"])) and float(rows["b2"]["lesion_f1"]) == 1.0
    assert rows["b1"]["fp_sizes_ml"] == "0.006" and rows["b1"]["fp"] == "1"


def test_group_key_splits_by_a_field_of_a_per_case_record(folders, tmp_path):
    """The clot cohort's occlusions.json holds a record per case: group detection metrics by 'occlusion'."""
    prediction, reference, _, out = folders
    occlusions = tmp_path / "occlusions.json"
    occlusions.write_text(json.dumps({"a1": {"occlusion": "proximal", "vessel": "M1"},
                                      "a2": {"occlusion": "distal", "vessel": "M2"},
                                      "b1": {"occlusion": "distal"}, "b2": {"occlusion": "proximal"}}))
    evaluate_main([str(prediction), str(reference), "--centers", str(occlusions), "--group-key", "occlusion",
                   "-o", str(out), "--quiet"])
    label = json.loads((out / "summary.json").read_text())["metrics"]["1"]
    assert list(label) == ["distal", "proximal", "all"]
    assert label["proximal"]["detection_rate"] == {"mean": 1.0, "std": 0.0, "n": 1}  # a1 found; b2 undefined
    assert label["distal"]["pooled"] == {**label["distal"]["pooled"], "tp": 0, "fp": 1, "fn": 1}
    with pytest.raises(SystemExit, match="no field 'vessel' for case"):
        evaluate_main([str(prediction), str(reference), "--centers", str(occlusions), "--group-key", "vessel",
                       "-o", str(tmp_path / "out2"), "--quiet"])
    assert not (tmp_path / "out2").exists()


def test_two_processes_give_the_same_rows_as_one(folders):
    prediction, reference, centers, _ = folders
    one = evaluate_folders(str(prediction), str(reference), EvaluationSettings(), None, num_processes=1)
    two = evaluate_folders(str(prediction), str(reference), EvaluationSettings(), None, num_processes=2)
    assert [r["case"] for r in one] == ["a1", "a2", "b1", "b2"]
    assert json.dumps(one, default=str) == json.dumps(two, default=str)


def _break_missing(prediction, reference):
    os.remove(prediction / "a2.nii.gz")


def _break_shape(prediction, reference):
    _write(prediction / "a1.nii.gz", _cube(shape=(8, 8, 9)), spacing=(2.0, 1.0, 1.0))


def _break_spacing(prediction, reference):
    _write(prediction / "a1.nii.gz", _cube(), spacing=(1.0, 1.0, 1.0))


def _break_origin(prediction, reference):
    _write(prediction / "a1.nii.gz", _cube(), spacing=(2.0, 1.0, 1.0), origin=(5.0, 0.0, 0.0))


def _break_label(prediction, reference):
    _write(prediction / "b2.nii.gz", _cube(value=7), spacing=(2.0, 1.0, 1.0))


def _break_reference_label(prediction, reference):
    _write(reference / "a1.nii.gz", _cube(value=2), spacing=(2.0, 1.0, 1.0))


def _break_fraction(prediction, reference):
    _write(prediction / "a1.nii.gz", _cube(value=0.5, dtype=np.float32), spacing=(2.0, 1.0, 1.0))


def _break_centers(prediction, reference):
    _write(prediction / "zz.nii.gz", _cube())
    _write(reference / "zz.nii.gz", _cube())


@pytest.mark.parametrize("damage,message", [
    (_break_missing, "1 of 4 prediction(s) missing in"),
    (_break_missing, "a2.nii.gz"),
    (_break_shape, "a1: prediction size (9, 8, 8) differs from (8, 8, 8) of the reference"),
    (_break_spacing, "a1: prediction spacing (1.0, 1.0, 1.0) differs from (2.0, 1.0, 1.0)"),
    (_break_origin, "a1: prediction origin (5.0, 0.0, 0.0) differs"),
    (_break_label, "b2: prediction contains label value(s) [7]; expected only [0, 1]"),
    (_break_reference_label, "a1: reference contains label value(s) [2]; expected only [0, 1]"),
    (_break_fraction, "a1: prediction contains label value(s) [0.5]; expected only [0, 1]"),
    (_break_centers, "1 case(s) not in the case->center map: zz"),
])
def test_bad_inputs_stop_with_a_message_and_write_nothing(folders, damage, message):
    prediction, reference, centers, out = folders
    damage(prediction, reference)
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(prediction), str(reference), "--centers", str(centers), "-o", str(out), "--quiet"])
    assert message in str(stop.value.code)
    assert not out.exists()


@pytest.mark.parametrize("ending", [".mha", ".nii.gz"])  # SimpleITK alone turns NaN in NIfTI into 0
def test_nan_is_refused(tmp_path, ending):
    for folder, value in (("pred", np.nan), ("ref", 1)):
        (tmp_path / folder).mkdir()
        _write(tmp_path / folder / f"a1{ending}", _cube(value=value, dtype=np.float32))
    with pytest.raises(SystemExit) as stop:
        evaluate_main([str(tmp_path / "pred"), str(tmp_path / "ref"), "--file-ending", ending, "-o",
                       str(tmp_path / "out"), "--quiet"])
    assert f"a1: prediction {tmp_path / 'pred' / ('a1' + ending)}: 8 NaN voxel(s)" in str(stop.value.code)
    assert not (tmp_path / "out").exists()


def test_a_second_label_is_evaluated_separately_and_allowed(folders):
    prediction, reference, _, out = folders
    _write(reference / "a1.nii.gz", _cube() + _cube(where=np.s_[5:7, 5:7, 5:7], value=2), spacing=(2.0, 1.0, 1.0))
    evaluate_main([str(prediction), str(reference), "--label", "1", "2", "-o", str(out), "--quiet"])
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert list(metrics) == ["1", "2"] and list(metrics["2"]) == ["all"]
    assert metrics["1"]["all"]["dice"]["mean"] == pytest.approx(0.5)        # a1 and b2 perfect, a2 and b1 not
    assert metrics["2"]["all"]["pooled"]["fn"] == 1                          # the label-2 lesion of a1 is missed


def test_evaluate_command_on_predictions_of_the_trained_model(resumed_run, nnunet_workspace, tmp_path):
    images = os.path.join(nnunet_workspace.raw_dataset, "imagesTs")
    labels = os.path.join(nnunet_workspace.raw_dataset, "labelsTs")
    centers = os.path.join(nnunet_workspace.raw_dataset, "case_centers.json")
    predictions, out = str(tmp_path / "pred"), str(tmp_path / "eval")
    nnunet_workspace.run(["nnunet_ext_predict", "-i", images, "-o", predictions, "-d", "501", "-c", "3d_fullres",
                          "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", TRAINER, "-device", "cpu", "--disable_tta",
                          "-npp", "0", "-nps", "0"])
    result = nnunet_workspace.run(["nnunet_ext_evaluate", predictions, labels, "--centers", centers, "-o", out,
                                   "--matching", "iou", "--iou", "0.1", "--connectivity", "6"])
    assert "evaluating" in result.stderr and "4/4" in result.stderr  # the progress bar
    assert "wrote" in result.stdout and "lesion F1" in result.stdout

    with open(os.path.join(out, "per_case.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["stroke_A_003", "stroke_B_003", "stroke_C_003", "stroke_D_003"]
    assert [r["center"] for r in rows] == ["A", "B", "C", "D"]
    dice = dice_per_case(predictions, labels)  # the existing Dice command must agree
    for row in rows:
        assert float(row["dice"]) == pytest.approx(dice[row["case"]])
        assert int(row["reference_lesions"]) == int(row["tp"]) + int(row["fn"]) >= 1
        tp, fp, fn = int(row["tp"]), int(row["fp"]), int(row["fn"])
        assert float(row["lesion_f1"]) == pytest.approx(2 * tp / (2 * tp + fp + fn))
        # the volume difference from the image files themselves: voxels counted here, voxel size from the header
        predicted = sitk.ReadImage(os.path.join(predictions, row["case"] + ".nii.gz"))
        reference = sitk.ReadImage(os.path.join(labels, row["case"] + ".nii.gz"))
        voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
        counted = abs(int(np.count_nonzero(sitk.GetArrayFromImage(predicted))) -
                      int(np.count_nonzero(sitk.GetArrayFromImage(reference))))
        assert float(row["abs_volume_difference_ml"]) == pytest.approx(counted * voxel_ml)

    summary = json.load(open(os.path.join(out, "summary.json")))
    label = summary["metrics"]["1"]
    assert list(label) == ["A", "B", "C", "D", "all"]
    assert label["all"]["dice"]["n"] == 4
    assert label["all"]["dice"]["mean"] == pytest.approx(np.mean(list(dice.values())))
    assert label["all"]["pooled"]["tp"] == sum(int(r["tp"]) for r in rows)
    assert summary["settings"]["matching"] == {"rule": "iou", "iou_threshold": 0.1, "distance_mm": 10.0,
                                               "connectivity": 6}
    assert "nnunet_ext_evaluate" in summary["provenance"]["command"]
