"""Clot post-processing steps on hand-built volumes with known answers, and the command end to end."""
import hashlib
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.postprocessing import postprocess_folder
from nnunet_ext.postprocessing.clot import (apply_chain, grow_by_threshold, keep_closest_to_lesion,
                                            keep_largest_object, parse_step, remove_small_objects)
from conftest import TRAINER


def _volume(*boxes, shape=(20, 20, 40)):
    mask = np.zeros(shape, bool)
    for z, y, x, size in boxes:  # a run of `size` voxels along x from (z, y, x)
        mask[z, y, x:x + size] = True
    return mask


def test_small_objects_are_removed_below_n_min_only():
    mask = _volume((1, 1, 0, 19), (5, 5, 0, 20), (10, 10, 0, 21))
    kept = remove_small_objects(mask, 20)
    assert not kept[1].any() and kept[5].sum() == 20 and kept[10].sum() == 21
    assert np.array_equal(remove_small_objects(kept, 20), kept)  # idempotent


def test_connectivity_decides_what_one_object_is():
    mask = np.zeros((4, 4, 4), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touching only at a corner
    assert remove_small_objects(mask, 2, connectivity=26).sum() == 2
    assert remove_small_objects(mask, 2, connectivity=6).sum() == 0


@pytest.mark.parametrize("boxes,expected", [
    ([(1, 1, 0, 5), (8, 8, 0, 9)], 9),            # one biggest object
    ([(1, 1, 0, 7), (8, 8, 0, 7), (15, 15, 0, 3)], 14),  # a tie: both of the largest size stay
    ([], 0),                                       # nothing to keep
])
def test_largest_object(boxes, expected):
    kept = keep_largest_object(_volume(*boxes))
    assert kept.sum() == expected
    assert np.array_equal(keep_largest_object(kept), kept)  # idempotent


def test_lesion_distance_keeps_candidates_within_the_margin_of_the_closest():
    lesion = np.zeros((3, 3, 60), bool)
    lesion[1, 1, 0] = True
    clots = np.zeros_like(lesion)
    for x in (5, 20, 40):  # distances 5, 20, 40 voxels from the lesion centroid
        clots[1, 1, x] = True
    kept = keep_closest_to_lesion(clots, lesion, margin=20)
    assert list(np.flatnonzero(kept[1, 1])) == [5, 20]  # 20 <= 5 + 20 < 40
    assert np.array_equal(keep_closest_to_lesion(kept, lesion, margin=20), kept)
    # in mm with 0.5 mm voxels along x, the same objects are 2.5, 10, 20 mm away
    assert keep_closest_to_lesion(clots, lesion, 18, "mm", (1.0, 1.0, 0.5)).sum() == 3
    assert keep_closest_to_lesion(clots, lesion, 10, "mm", (1.0, 1.0, 0.5)).sum() == 2
    assert keep_closest_to_lesion(clots, lesion, 7, "mm", (1.0, 1.0, 0.5)).sum() == 1


def test_lesion_distance_without_a_lesion_or_objects():
    clots = _volume((1, 1, 0, 3), (9, 9, 0, 3))
    assert np.array_equal(keep_closest_to_lesion(clots, np.zeros_like(clots)), clots)  # nothing to measure
    empty = np.zeros_like(clots)
    assert not keep_closest_to_lesion(empty, clots).any()
    with pytest.raises(ValueError, match="lesion mask shape"):
        keep_closest_to_lesion(clots, np.zeros((2, 2, 2), bool))


def test_threshold_growing_follows_face_connected_voxels_above_th():
    mask = _volume((5, 5, 5, 1))
    probabilities = np.zeros(mask.shape)
    probabilities[5, 5, 6:9] = 0.5      # a face-connected trail: grown
    probabilities[5, 6, 8] = 0.31       # continues the trail sideways: grown
    probabilities[5, 5, 12] = 0.9       # high but disconnected: not grown
    probabilities[6, 6, 6] = 0.9        # only diagonal to the object: not grown
    probabilities[5, 4, 5] = 0.3        # not above th: not grown
    grown = grow_by_threshold(mask, probabilities, 0.3)
    assert set(map(tuple, np.argwhere(grown))) == {(5, 5, 5), (5, 5, 6), (5, 5, 7), (5, 5, 8), (5, 6, 8)}
    assert np.array_equal(grow_by_threshold(grown, probabilities, 0.3), grown)  # idempotent
    assert not grow_by_threshold(np.zeros_like(mask), probabilities, 0.3).any()  # nothing detected, nothing grown


def test_threshold_growing_rejects_bad_probabilities():
    mask = _volume((1, 1, 1, 1))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        grow_by_threshold(mask, np.full(mask.shape, 1.5), 0.3)
    with pytest.raises(ValueError, match="shape"):
        grow_by_threshold(mask, np.zeros((3, 3, 3)), 0.3)


def test_chain_runs_in_order_and_empty_stays_empty():
    mask = _volume((1, 1, 0, 30), (10, 10, 0, 25), (15, 15, 0, 3))
    assert apply_chain(mask, [parse_step("min_size:20"), parse_step("largest")]).sum() == 30
    nothing = apply_chain(mask, [parse_step("min_size:40"), parse_step("largest")])
    assert not nothing.any()
    with pytest.raises(ValueError, match="needs the predicted probabilities"):
        apply_chain(mask, [parse_step("threshold")])


@pytest.mark.parametrize("text,parsed", [("min_size", ("min_size", 20.0)), ("min_size:5", ("min_size", 5.0)),
                                         ("largest", ("largest", None)), ("threshold:0.4", ("threshold", 0.4)),
                                         ("lesion_distance", ("lesion_distance", 20.0))])
def test_parse_step(text, parsed):
    assert parse_step(text) == parsed


@pytest.mark.parametrize("text,message", [
    ("biggest", "unknown post-processing step 'biggest'"), ("largest:3", "takes no value"),
    ("min_size:x", "not a number"),
    # not finite: lesion_distance:nan removed every object, min_size:inf overflowed (both silently or a traceback)
    ("lesion_distance:nan", "'nan' is not a finite number"), ("min_size:inf", "'inf' is not a finite number"),
    ("threshold:-inf", "'-inf' is not a finite number"), ("min_size:0", "'0' is not a whole number of voxels >= 1"),
    ("min_size:2.5", "'2.5' is not a whole number"), ("lesion_distance:-1", "'-1' is negative"),
    ("threshold:1.5", "'1.5' is not a probability in \\[0, 1\\]")])
def test_bad_steps(text, message):
    with pytest.raises(ValueError, match=message):
        parse_step(text)


def test_folder_chain_in_the_library_keeps_other_labels_and_geometry(tmp_path):
    """The folder step the clot harness calls in process (no command line in between)."""
    predictions, output = tmp_path / "pred", tmp_path / "post"
    predictions.mkdir()
    segmentation = _volume((1, 1, 0, 30), (10, 10, 0, 3)).astype(np.uint8)
    segmentation[15, 15, 0:4] = 2  # another label passes through untouched
    image = sitk.GetImageFromArray(segmentation)
    image.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(image, str(predictions / "case_0.nii.gz"))
    assert postprocess_folder(str(predictions), str(output), [parse_step("min_size:6")], command="cmd") == 1
    processed = sitk.ReadImage(str(output / "case_0.nii.gz"))
    result = sitk.GetArrayFromImage(processed)
    assert processed.GetSpacing() == pytest.approx((0.8, 0.8, 3.0))
    assert (result == 1).sum() == 30 and (result == 2).sum() == 4  # the 3-voxel object is below n_min
    assert json.load(open(output / "postprocessing.json"))["steps"] == [["min_size", 6.0]]
    with pytest.raises(FileExistsError):
        postprocess_folder(str(predictions), str(output), [parse_step("largest")])


def test_a_label_no_prediction_holds_is_named_not_skipped_silently(tmp_path):
    predictions, output = tmp_path / "pred", tmp_path / "post"
    predictions.mkdir()
    segmentation = np.zeros((10, 12, 14), np.uint8)
    segmentation[2:4, 2:4, 2:4] = 2
    sitk.WriteImage(sitk.GetImageFromArray(segmentation), str(predictions / "case_0.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros_like(segmentation)), str(predictions / "case_1.nii.gz"))
    with pytest.raises(ValueError, match="label 1 is in none of the 2 predictions, which hold label\\(s\\) 2: "
                                         "choose one with --label"):
        postprocess_folder(str(predictions), str(output), [parse_step("largest")])
    assert not output.exists()
    # empty predictions (nothing predicted at all) are not an error: nothing to post-process
    os.remove(predictions / "case_0.nii.gz")
    assert postprocess_folder(str(predictions), str(output), [parse_step("largest")]) == 1


def test_a_truncated_prediction_is_refused_and_nothing_is_written(tmp_path):
    predictions, output = tmp_path / "pred", tmp_path / "post"
    predictions.mkdir()
    segmentation = np.zeros((20, 30, 40), np.uint8)
    segmentation[5:9, 5:9, 5:9] = 1
    path = predictions / "case_0.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(segmentation), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # SimpleITK alone would read what is left
    with pytest.raises(ValueError, match=f"{path}: .*(incomplete|unreadable)"):
        postprocess_folder(str(predictions), str(output), [parse_step("largest")])
    assert not output.exists()


def _digest(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest() for f in sorted(os.listdir(folder))}


def test_command_on_predictions_of_a_trained_model(resumed_run, nnunet_workspace, tmp_path):
    images = os.path.join(nnunet_workspace.raw_dataset, "imagesTs")
    predictions = tmp_path / "pred"
    nnunet_workspace.run(["nnUNetv2_predict", "-i", images, "-o", str(predictions), "-d", "501", "-c", "3d_fullres",
                          "-f", "0", "-p", "nnUNetPlans_CPU", "-tr", TRAINER, "-device", "cpu", "--disable_tta",
                          "-npp", "0", "-nps", "0", "--save_probabilities"])
    before = _digest(predictions)
    lesions = os.path.join(nnunet_workspace.raw_dataset, "labelsTs")  # stands in for a lesion model's output
    output = tmp_path / "post"
    nnunet_workspace.run(["nnunet_ext_postprocess", "-i", str(predictions), "-o", str(output), "--steps",
                          "min_size:5", "threshold:0.3", "lesion_distance:20", "largest", "--lesions", lesions])
    assert _digest(predictions) == before  # the input is untouched
    cases = sorted(f for f in os.listdir(predictions) if f.endswith(".nii.gz"))
    assert sorted(f for f in os.listdir(output) if f.endswith(".nii.gz")) == cases
    for case in cases:
        original = sitk.ReadImage(str(predictions / case))
        processed = sitk.ReadImage(str(output / case))
        assert processed.GetSize() == original.GetSize() and processed.GetSpacing() == original.GetSpacing()
        expected = keep_largest_object(keep_closest_to_lesion(grow_by_threshold(
            remove_small_objects(sitk.GetArrayFromImage(original) == 1, 5),
            np.load(str(predictions / case.replace(".nii.gz", ".npz")))["probabilities"][1], 0.3),
            sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(lesions, case))) > 0, 20))
        assert np.array_equal(sitk.GetArrayFromImage(processed) == 1, expected)
    assert json.load(open(output / "postprocessing.json"))["steps"][0] == ["min_size", 5.0]

    # missing inputs: a clear error and no output folder
    os.remove(predictions / cases[0].replace(".nii.gz", ".npz"))
    failed = nnunet_workspace.run(["nnunet_ext_postprocess", "-i", str(predictions), "-o", str(tmp_path / "bad"),
                                   "--steps", "threshold:0.3"], check=False)
    assert failed.returncode != 0 and "no stroke_A_003.npz probabilities" in failed.stderr
    assert not (tmp_path / "bad").exists()
    failed = nnunet_workspace.run(["nnunet_ext_postprocess", "-i", str(predictions), "-o", str(tmp_path / "bad"),
                                   "--steps", "lesion_distance", "--lesions", str(tmp_path)], check=False)
    assert failed.returncode != 0 and "no lesion prediction" in failed.stderr and not (tmp_path / "bad").exists()
