"""Center-stratified k-fold and leave-center-out splits, written in nnU-Net's splits_final.json format."""
import json
import os
import subprocess

import pytest

from nnunet_ext.cli.splits import main as splits_main
from nnunet_ext.data.splits import leave_center_out, restrict_to, stratified_kfold, validation_counts


def _centers(**counts):
    return {f"{center}_{i:02d}": center for center, n in counts.items() for i in range(n)}


@pytest.mark.parametrize("counts,k", [
    (dict(A=5, B=3, C=2), 3),
    (dict(A=6, B=6, C=6, D=6), 5),
    (dict(A=1, B=1, C=7), 4),
    (dict(A=2, B=2), 4),
    (dict(A=3), 3),
])
def test_every_center_is_spread_evenly_and_every_case_validated_once(counts, k):
    case_centers = _centers(**counts)
    splits = stratified_kfold(case_centers, k, seed=0)
    assert len(splits) == k
    validated = [c for fold in splits for c in fold["val"]]
    assert sorted(validated) == sorted(case_centers)                       # each case validated exactly once
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == sorted(case_centers)  # train and val partition the cases
        assert fold["val"] == sorted(fold["val"]) and fold["train"] == sorted(fold["train"])
    per_fold = validation_counts(splits, case_centers)
    for center, n in counts.items():
        assert sorted(f[center] for f in per_fold) == [n // k] * (k - n % k) + [n // k + 1] * (n % k)
    sizes = [len(fold["val"]) for fold in splits]
    assert max(sizes) - min(sizes) <= 1


def test_the_seed_decides_the_split_and_repeats_it():
    case_centers = _centers(A=10, B=10)
    assert stratified_kfold(case_centers, 5, seed=1) == stratified_kfold(case_centers, 5, seed=1)
    assert stratified_kfold(case_centers, 5, seed=1) != stratified_kfold(case_centers, 5, seed=2)


def test_leave_center_out_holds_the_center_out_of_every_fold():
    case_centers = _centers(A=4, B=4, C=4, D=3)
    splits, test = leave_center_out(case_centers, ["D"], k=4, seed=0)
    assert test == ["D_00", "D_01", "D_02"]
    for fold in splits:
        assert not any(c.startswith("D_") for c in fold["train"] + fold["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(c for c in case_centers if not c.startswith("D_"))
    _, test_two = leave_center_out(case_centers, ["A", "D"], k=2)
    assert len(test_two) == 7


@pytest.mark.parametrize("attempt,message", [
    (lambda m: stratified_kfold({}, 2), "the case->center map is empty"),
    (lambda m: stratified_kfold(m, 1), "k must be an integer >= 2"),
    (lambda m: stratified_kfold(m, 7), "k = 7 folds need at least 7 cases, got 6"),
    (lambda m: leave_center_out(m, ["Z"]), "unknown center 'Z'; the case->center map has A, B"),
    (lambda m: leave_center_out(m, []), "name at least one center to hold out; centers are A, B"),
    (lambda m: leave_center_out(m, ["A", "B"]), "holding out A, B leaves no case to train on"),
    (lambda m: leave_center_out(m, ["B"], k=4), "k = 4 folds need at least 4 cases, got 3"),
    (lambda m: restrict_to(m, ["A_00", "X_09"]), "1 case(s) have no center in the case->center map: X_09"),
])
def test_bad_requests_are_refused_with_the_value(attempt, message):
    with pytest.raises(ValueError) as error:
        attempt(_centers(A=3, B=3))
    assert message in str(error.value)


def test_cli_leave_center_out_writes_splits_and_test_list_for_the_cases_present(tmp_path, capsys):
    case_centers = _centers(A=3, B=3, C=2)
    (tmp_path / "case_centers.json").write_text(json.dumps({**case_centers, "A_99": "A"}))  # e.g. a test case
    labels = tmp_path / "labelsTr"
    labels.mkdir()
    for case in case_centers:
        (labels / f"{case}.nii.gz").write_bytes(b"")
    out = tmp_path / "preprocessed"
    splits_main(["--centers", str(tmp_path / "case_centers.json"), "--cases-in", str(labels), "-o", str(out),
                 "-k", "2", "--hold-out", "C"])
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2 and set(splits[0]) == {"train", "val"}
    assert sorted(splits[0]["train"] + splits[0]["val"]) == sorted(c for c in case_centers if c[0] in "AB")
    test = json.loads((out / "test_cases.json").read_text())
    assert test["held_out_centers"] == ["C"] and test["test_cases"] == ["C_00", "C_01"]
    assert "--hold-out C" in test["provenance"]["command"] and test["provenance"]["seed"] == 12345
    assert "fold 1: 3 train, 3 val" in capsys.readouterr().out
    assert [p for p in os.listdir(out) if p.startswith(".")] == []


def test_cli_refuses_an_unknown_center_and_writes_nothing(tmp_path):
    (tmp_path / "case_centers.json").write_text(json.dumps(_centers(A=3, B=3)))
    with pytest.raises(SystemExit) as stop:
        splits_main(["--centers", str(tmp_path / "case_centers.json"), "-o", str(tmp_path / "out"), "-k", "2",
                     "--hold-out", "Q"])
    assert "unknown center 'Q'; the case->center map has A, B" in str(stop.value.code)
    assert not (tmp_path / "out").exists()


def test_cli_with_a_dataset_id_uses_the_nnunet_folders(tmp_path):
    raw = tmp_path / "nnUNet_raw" / "Dataset777_Fake"
    (raw / "labelsTr").mkdir(parents=True)
    case_centers = _centers(A=4, B=2)
    (raw / "case_centers.json").write_text(json.dumps({**case_centers, "B_50": "B"}))  # B_50: not in labelsTr
    for case in case_centers:
        (raw / "labelsTr" / f"{case}.nii.gz").write_bytes(b"")
    env = {**os.environ, "nnUNet_raw": str(tmp_path / "nnUNet_raw"),
           "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"), "nnUNet_results": str(tmp_path / "res")}
    result = subprocess.run(["nnunet_ext_splits", "-d", "777", "-k", "3"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    splits = json.loads((tmp_path / "nnUNet_preprocessed" / "Dataset777_Fake" / "splits_final.json").read_text())
    assert sorted(c for c in splits[0]["train"] + splits[0]["val"]) == sorted(case_centers)
    assert [sorted(f["val"]) for f in splits] == [f["val"] for f in splits] and len(splits) == 3
    assert not (tmp_path / "nnUNet_preprocessed" / "Dataset777_Fake" / "test_cases.json").exists()
