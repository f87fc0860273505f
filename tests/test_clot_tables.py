"""The thrombus tables (5-7) harness: layouts, the paper's numbers, metrics, runs and their aggregation, report files,
and the ci profile end to end through the stock nnU-Net commands (a Table 7 and a Table 6 subset that share a
training, two runs each)."""
import csv
import importlib
import json
import os
import re
from dataclasses import asdict

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.cli import reproduce_clot
from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
from nnunet_ext.evaluation.evaluate import summarize
from nnunet_ext.evaluation.lesion_metrics import SCALAR_METRICS
from nnunet_ext.experiments.clot.datasets import derive_lesion_dataset, run_fold, validation_split
from nnunet_ext.experiments.clot.harness import ClotHarness
from nnunet_ext.experiments.clot.profiles import CLOT_PROFILES, GRADUAL, NNUNET, ClotProfile, same_profile
from nnunet_ext.experiments.clot.paper_numbers import PAPER_TABLE5, PAPER_TABLE6, PAPER_TABLE7, PaperRow
from nnunet_ext.experiments.clot.rows import Network, check_models, row_networks, table_comparisons, table_rows
from nnunet_ext.experiments.clot.aggregate import (aggregate_runs, judge, missing_text, read_reference_results,
                                                   table_metrics)
from nnunet_ext.experiments.clot.report import paper_text, validation_note, write_clot_report
from nnunet_ext.experiments.progress import validation_course
from nnunet_ext.provenance import provenance

QUICK, HARD, CI = CLOT_PROFILES["quick"], CLOT_PROFILES["quick_hard"], CLOT_PROFILES["ci"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------- layouts

def _layout(rows):
    return [(r.network.model, r.network.slices, r.test_set, r.phase_channel, r.chain) for r in rows]


def test_table5_is_attllstm_at_the_scaled_slice_counts():
    rows = table_rows(5, QUICK)
    assert _layout(rows) == [("AttLLSTM", s, "AB", "present", ()) for s in (6, 8, 10)]
    assert [r.paper.dice for r in rows] == [(0.48, 0.51), (0.55, 0.54), (0.59, 0.42)]
    assert QUICK.default_slices == 8 and CI.default_slices == 8


def test_table6_rows_in_the_papers_order():
    rows = table_rows(6, QUICK)
    models = [NNUNET, "CLSTM", "LLSTM", "AttCLSTM", "AttLLSTM", "UpAttLLSTM"]
    expected = [(m, ()) for m in models] + [(m, ("Lesion",)) for m in (NNUNET, "AttCLSTM", "AttLLSTM")] + \
        [(m, ("Lesion", "Thr")) for m in (NNUNET, "AttCLSTM", "AttLLSTM")] + [("UpAttLLSTM", ("Big",))]
    assert [(r.network.model, r.chain) for r in rows] == expected
    assert all(r.test_set == "AB" and r.phase_channel == "present" for r in rows)
    assert rows[0].network.slices is None and rows[1].network.slices == 8
    assert rows[7].paper.dice == (0.43, 0.36) and rows[11].paper.det == (1.0, 0.91)


def test_table7_rows_and_shared_cells():
    rows = table_rows(7, QUICK)
    assert len(rows) == 12
    assert [(r.test_set, r.phase_channel, r.chain) for r in rows[:6]] == [
        ("AB", "present", ()), ("AB", "present", ("Big",)), ("AB", "missing", ()), ("AB", "missing", ("Big",)),
        ("C", "present", ()), ("C", "present", ("Big",))]
    assert {r.network.model for r in rows[6:]} == {GRADUAL}
    # the gradual rows are UpAttLLSTM trained another way: the architecture is one, the recipe another
    assert {(r.network.architecture, r.network.gradual_dropout) for r in rows} == {("UpAttLLSTM", False),
                                                                                   ("UpAttLLSTM", True)}
    assert rows[10].paper.dice_all == 0.28 and rows[11].paper.det_all == 0.77 and rows[3].paper is None
    # the same row in two tables is one result: AttLLSTM at 8 slices (5, 6), UpAttLLSTM raw and +Big (6, 7)
    table5, table6 = {r.key for r in table_rows(5, QUICK)}, {r.key for r in table_rows(6, QUICK)}
    assert table5 & table6 == {"AttLLSTM_s8__AB_present__raw"}
    assert table6 & {r.key for r in rows} == {"UpAttLLSTM_s8__AB_present__raw", "UpAttLLSTM_s8__AB_present__Big"}


def test_oracle_lesion_rows_have_their_own_key_and_label():
    model, oracle = (table_rows(6, QUICK, ["AttLLSTM"], lesion) for lesion in ("model", "reference"))
    assert model[2].key == "AttLLSTM_s8__AB_present__Lesion+Thr"
    assert oracle[2].key == "AttLLSTM_s8__AB_present__Lesion+Thr_oracle"
    assert oracle[2].postprocessing == "Min+Lesion+Thr (reference lesion, oracle)"


def test_networks_needed_in_training_order():
    keys = [n.key for n in row_networks(table_rows(7, QUICK), QUICK)]
    assert keys == ["UpAttLLSTM_s8", "UpAttLLSTMGradualDrop_s8"]  # the fine-tune after the model it starts from
    scratch = ClotProfile(**{**QUICK.__dict__, "gradual_init": "scratch"})
    assert [n.key for n in row_networks(table_rows(7, scratch, [GRADUAL]), scratch)] == ["UpAttLLSTMGradualDrop_s8"]
    assert [n.key for n in row_networks(table_rows(6, QUICK, [NNUNET]), QUICK)] == ["nnunet", "lesion_nnunet"]
    assert [n.key for n in row_networks(table_rows(6, QUICK, [NNUNET], "reference"), QUICK)] == ["nnunet"]


def test_every_trainer_of_every_profile_is_listed_for_nnunet():
    """nnU-Net finds trainers by module-level name in trainers/ only (listed, or built on demand)."""
    modules = [importlib.import_module(f"nnunet_ext_trainers.{m}")
               for m in ("modality_dropout_trainers", "upattllstm_trainers", "variants_on_demand")]
    for profile in CLOT_PROFILES.values():
        for table in (5, 6, 7):
            for network in row_networks(table_rows(table, profile), profile):
                name = network.trainer(profile)
                assert any(hasattr(m, name) for m in modules), name
    assert Network.of_model(GRADUAL, 8) == Network("UpAttLLSTM", 8, gradual_dropout=True)
    assert Network.of_model(GRADUAL, 8).plans == "nnUNetPlans_UpAttLLSTM_s8"
    assert Network.of_model(GRADUAL, 8).trainer(QUICK) == "nnUNetTrainerUpAttLLSTMGradualDrop_100epochs_16it_2valit"
    assert Network(NNUNET).trainer(QUICK) == "nnUNetTrainerNoDropout_100epochs_16it_2valit"
    inplane = ClotProfile(**{**QUICK.__dict__, "clot_augmentation": "inplane"})
    assert Network("AttLLSTM", 8).trainer(inplane) == "nnUNetTrainerUpAttLLSTMSpatialDA_100epochs_16it_2valit"
    assert Network.of_model(GRADUAL, 8).trainer(inplane) == \
        "nnUNetTrainerUpAttLLSTMSpatialDAGradualDrop_100epochs_16it_2valit"
    assert Network(NNUNET).trainer(inplane) == "nnUNetTrainerNoDropout_100epochs_16it_2valit"  # nnU-Net's own DA
    with pytest.raises(ValueError, match="clot_augmentation must be one of paper, inplane, got 'rotate'"):
        ClotProfile(**{**QUICK.__dict__, "clot_augmentation": "rotate"})


def test_a_workdir_profile_stored_before_a_field_existed_is_the_same_profile_with_its_default():
    stored = json.loads(json.dumps(asdict(QUICK)))
    del stored["clot_augmentation"]  # written before the field existed: what 'paper' does now
    assert same_profile(stored, QUICK)
    assert not same_profile(stored, ClotProfile(**{**QUICK.__dict__, "clot_augmentation": "inplane"}))
    assert not same_profile({**stored, "epochs": 400}, QUICK)
    assert not same_profile({**stored, "unknown": 1}, QUICK)
    assert not same_profile(stored, ClotProfile(**{**QUICK.__dict__, "validation_cases": 4}))


def test_paper_numbers_are_rates():
    rows = list(PAPER_TABLE5.values()) + list(PAPER_TABLE6.values()) + list(PAPER_TABLE7.values())
    for row in rows:
        values = [*row.dice, *row.det, row.dice_all, row.det_all]
        assert all(0 <= v <= 1 for v in values if v is not None) and any(v is not None for v in values)


@pytest.mark.parametrize("table,models,message", [
    (8, None, "unknown table 8; the thrombus tables are 5, 6, 7"),
    (6, ["Foo"], "unknown model\\(s\\) 'Foo' for Table 6; expected some of nnU-Net, CLSTM"),
    (7, ["AttLLSTM"], "unknown model\\(s\\) 'AttLLSTM' for Table 7"),
])
def test_bad_table_or_model_is_named(table, models, message):
    with pytest.raises(ValueError, match=message):
        check_models(table, models)


@pytest.mark.parametrize("changes,message", [
    ({"lesion_source": "atlas"}, "lesion_source must be 'model' or 'reference'"),
    ({"preset": "medium"}, "unknown clot cohort preset 'medium'; presets: easy, hard"),
    ({"runs": 0}, "runs must be a whole number >= 1, got 0"),
    ({"validation_cases": 0}, "validation_cases must be a whole number >= 1, got 0"),
    ({"gradual_init": "warm"}, "gradual_init must be 'pretrained' or 'scratch'"),
    ({"slices": ((6, 10), (8, 14))}, "exactly one slice count must stand for the paper's 12"),
])
def test_bad_profiles(changes, message):
    with pytest.raises(ValueError, match=message):
        ClotProfile(**{**QUICK.__dict__, **changes})


def test_profile_derived_values():
    assert QUICK.lesion_distance_mm == 3.75  # 20 px of 256 over a 48 mm field of view
    assert CI.trainer("UpAttLLSTM") == "nnUNetTrainerUpAttLLSTM_1epochs_2it_1valit"
    assert ClotProfile(**{**QUICK.__dict__, "epochs": 1000}).trainer("NoDropout") == \
        "nnUNetTrainerNoDropout_16it_2valit"  # nnU-Net's 1000 epochs go unsaid, the iterations do not


def test_quick_hard_is_the_quick_budget_on_the_hard_preset():
    assert {k: v for k, v in HARD.__dict__.items() if k not in ("name", "preset")} == \
        {k: v for k, v in QUICK.__dict__.items() if k not in ("name", "preset")}
    assert (HARD.preset, QUICK.preset, CI.preset) == ("hard", "easy", "easy")
    assert (HARD.runs, QUICK.runs, CI.runs) == (3, 3, 2)


@pytest.mark.parametrize("profile,pixel_area,n_min", [
    # 20 px x 0.45^2 mm^2 = 4.05 mm^2 over the mean pixel area of centers A and B
    (HARD, (0.8 ** 2 + 0.9 ** 2) / 2, 6),   # 4.05 / 0.725 = 5.59
    (QUICK, (0.9 ** 2 + 1.0 ** 2) / 2, 4),  # 4.05 / 0.905 = 4.48
    (CI, (0.9 ** 2 + 1.0 ** 2) / 2, 4),
])
def test_min_size_is_the_papers_area_at_the_cohorts_pixel(profile, pixel_area, n_min):
    assert profile.training_pixel_area_mm2 == pytest.approx(pixel_area)
    assert profile.min_size_voxels == n_min


def test_validation_split_keeps_one_case_out_in_every_runs_fold():
    assert validation_split(["b", "c", "a"]) == [{"train": ["b", "c"], "val": ["a"]}]
    assert validation_split(["b", "c", "a"], 3) == [{"train": ["b", "c"], "val": ["a"]}] * 3
    with pytest.raises(ValueError, match="need more than 1 training case\\(s\\) to validate on 1 .*, got 1"):
        validation_split(["a"])
    assert [run_fold(r) for r in (1, 2, 3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="runs are numbered from 1, got 0"):
        run_fold(0)


def test_validation_split_spreads_several_validation_cases_over_the_sorted_cases():
    # the pilot's split (benchmarks/results/pilots/up_validation_split): every fourth of 16, from the first
    cases = [f"clot_{c}_{i:03d}" for c in "BA" for i in range(8)]
    (fold,) = validation_split(cases, 1, 4)
    assert fold["val"] == ["clot_A_000", "clot_A_004", "clot_B_000", "clot_B_004"]
    assert fold["train"] == sorted(set(cases) - set(fold["val"])) and len(fold["train"]) == 12
    # 7 cases, 3 validated on: every second (7 // 3 = 2), the first three of those
    assert validation_split(list("gfedcba"), 2, 3) == [{"train": list("bdfg"), "val": list("ace")}] * 2
    with pytest.raises(ValueError, match="need more than 3 training case\\(s\\) to validate on 3 .*, got 3"):
        validation_split(["a", "b", "c"], 1, 3)
    with pytest.raises(ValueError, match="validation_cases must be >= 1, got 0"):
        validation_split(["a", "b"], 1, 0)



# ---------------------------------------------------------------------------------------------- metrics and report

def _case(case, group, dice, fp_sizes, fn_sizes, detection):
    row = {metric: 0 for metric in SCALAR_METRICS}
    row.update(case=case, center=group, label=1, dice=dice, fp=len(fp_sizes), fn=len(fn_sizes),
               tp=1 if detection == 1.0 else 0, detection_rate=detection, fp_sizes_ml=fp_sizes, fn_sizes_ml=fn_sizes)
    return row


def test_table_metrics_known_values():
    rows = [_case("p1", "proximal", 0.5, [0.001, 0.003], [], 1.0),
            _case("d1", "distal", 0.0, [], [0.002], 0.0),
            _case("d2", "distal", 1.0, [], [], 1.0)]
    metrics = table_metrics(summarize(rows)["1"])
    assert metrics["proximal"] == pytest.approx({"fp_count": 2.0, "fp_size_mm3": 2.0, "fn_count": 0.0,
                                                 "fn_size_mm3": None, "dice": 0.5, "detection": 1.0, "cases": 1})
    assert metrics["distal"] == pytest.approx({"fp_count": 0.0, "fp_size_mm3": None, "fn_count": 0.5,
                                               "fn_size_mm3": 2.0, "dice": 0.5, "detection": 0.5, "cases": 2})
    assert metrics["all"]["fp_count"] == pytest.approx(2 / 3) and metrics["all"]["detection"] == pytest.approx(2 / 3)
    only_distal = table_metrics(summarize(rows[1:])["1"])
    assert only_distal["proximal"]["cases"] == 0 and only_distal["proximal"]["dice"] is None


def test_paper_text():
    notes = []
    assert paper_text(None, "dice", notes) == "-"
    assert paper_text(PaperRow("x", (0.55, 0.54), (1.0, 0.91)), "det", notes) == "1.00 / 0.91"
    assert paper_text(PaperRow("y", dice_all=0.28, uncertain="lost"), "dice", notes) == "0.28 (all) ?[1]"
    assert paper_text(PaperRow("z", (0.1, None), uncertain="other"), "dice", notes) == "0.10 / - ?[2]"
    assert notes == ["lost", "other"]


def _run(dice_p, dice_d, fp_sizes_p, detection_d=1.0):
    """Metrics of one run: one proximal and one distal case."""
    cases = [_case("p1", "proximal", dice_p, fp_sizes_p, [], 1.0), _case("d1", "distal", dice_d, [], [], detection_d)]
    return {"metrics": table_metrics(summarize(cases)["1"]), "trainer": "T", "plans": "P",
            "commands": ["nnUNetv2_train ..."]}


def _assert_aggregate(cell: dict, mean: float, std_runs: float, runs: int, values: list) -> None:
    """One aggregated cell, nested values compared one by one (pytest >= 9 refuses approx of nested dicts)."""
    assert set(cell) == {"mean", "std_runs", "runs", "values"}
    assert cell["mean"] == pytest.approx(mean) and cell["std_runs"] == pytest.approx(std_runs)
    assert cell["runs"] == runs
    assert len(cell["values"]) == len(values)
    for found, expected in zip(cell["values"], values):
        assert found is None if expected is None else found == pytest.approx(expected)


def test_runs_are_aggregated_to_mean_and_std():
    first, second = _run(0.5, 0.25, [0.001]), _run(0.7, 0.75, [], detection_d=0.0)
    aggregate = aggregate_runs([first["metrics"], second["metrics"]])
    _assert_aggregate(aggregate["proximal"]["dice"], mean=0.6, std_runs=0.1, runs=2, values=[0.5, 0.7])
    assert aggregate["distal"]["dice"]["mean"] == pytest.approx(0.5)
    assert aggregate["distal"]["dice"]["std_runs"] == pytest.approx(0.25)
    assert aggregate["all"]["detection"]["mean"] == pytest.approx(0.75)  # runs: 1.0 and 0.5
    _assert_aggregate(aggregate["proximal"]["fp_count"], mean=0.5, std_runs=0.5, runs=2, values=[1.0, 0.0])
    # a size exists only in the run that has an FP: the mean is over that run, the missing value kept as None
    _assert_aggregate(aggregate["proximal"]["fp_size_mm3"], mean=1.0, std_runs=0.0, runs=1, values=[1.0, None])
    assert aggregate["all"]["cases"] == 2 and aggregate["distal"]["cases"] == 1
    partial = aggregate_runs([first["metrics"], None])
    _assert_aggregate(partial["proximal"]["dice"], mean=0.5, std_runs=0.0, runs=1, values=[0.5, None])
    assert missing_text([first, None]) == "run 2 of 2 missing"
    assert missing_text([None, first, None]) == "runs 1, 3 of 3 missing" and missing_text([first]) == ""


@pytest.mark.parametrize("method,reference,higher,expected", [
    ({"mean": 0.8, "std_runs": 0.05, "runs": 3}, {"mean": 0.6, "std_runs": 0.1, "runs": 3}, True, "better"),
    ({"mean": 0.75, "std_runs": 0.1, "runs": 3}, {"mean": 0.6, "std_runs": 0.1, "runs": 3}, True,
     "no clear difference"),  # 0.15 is not beyond 0.1 + 0.1
    ({"mean": 0.8, "std_runs": 0.05, "runs": 3}, {"mean": 0.6, "std_runs": 0.1, "runs": 3}, False, "worse"),  # FP
    ({"mean": 0.8, "std_runs": 0.0, "runs": 1}, {"mean": 0.6, "std_runs": 0.0, "runs": 3}, True, "not judged"),
    ({"mean": None, "std_runs": None, "runs": 0}, {"mean": 0.6, "std_runs": 0.1, "runs": 3}, True, "not judged"),
])
def test_verdicts_only_beyond_the_run_spread(method, reference, higher, expected):
    assert judge(method, reference, higher).startswith(expected)


def test_rows_are_compared_with_their_reference_row():
    assert table_comparisons(5, table_rows(5, QUICK)) == [(0, 1), (2, 1)]  # 6 and 10 slices against 8 (paper 12)
    six = table_comparisons(6, table_rows(6, QUICK))
    assert six[:5] == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 0)]  # every recurrent model against nnU-Net
    assert (6, 0) in six and (9, 0) in six and (12, 5) in six  # +Lesion, +Lesion+Thr, +Big against the raw row
    seven = table_comparisons(7, table_rows(7, QUICK))
    assert (1, 0) in seven and (6, 0) in seven and (7, 1) in seven and (7, 6) in seven


def test_report_files_with_runs_missing(tmp_path):
    rows = table_rows(5, CI)
    results = {rows[0].key: [_run(0.5, 0.25, [0.001]), _run(0.7, 0.75, [])], rows[1].key: [None, _run(0.4, 0.2, [])]}
    paths = write_clot_report(5, CI, rows, results, str(tmp_path / "t5"), "cmd", provenance(seed=0), ["extra note"])
    text = open(paths["md"]).read()
    assert ("| 1 | AttLLSTM, 6 slices (paper: 10) | A+B | present | - | 2/2 | 0.50 ± 0.50 | 0.00 ± 0.00 | 1.0 | - "
            "| 0.00 ± 0.00 | 0.00 ± 0.00 | - | - | 0.60 ± 0.10 | 0.50 ± 0.25 | 1.00 ± 0.00 | 1.00 ± 0.00 | "
            "0.55 ± 0.17 | 1.00 ± 0.00 | 0.38, 0.72 | 1/1 |") in text
    assert "| 2 | AttLLSTM, 8 slices (paper: 12) | A+B | present | - | 1/2 (run 1 of 2 missing) | 0.00 | 0.00 |" in text
    assert "- row 2 (AttLLSTM, 8 slices (paper: 12), -): run 1 of 2 missing" in text and "- extra note" in text
    assert "- row 1 vs row 2 (AttLLSTM, 6 slices (paper: 10), - vs AttLLSTM, 8 slices (paper: 12), -): Dice all " \
           "0.55 ± 0.17 vs 0.30: not judged (fewer than 2 runs" in text
    table = list(csv.DictReader(open(paths["csv"])))
    assert [r["key"] for r in table] == [r.key for r in rows]
    assert float(table[0]["dice_distal"]) == 0.5 and float(table[0]["dice_distal_std"]) == 0.25
    assert table[0]["dice_proximal_runs"] == "0.5;0.7" and table[1]["missing"] == "run 1 of 2 missing"
    assert float(table[1]["paper_dice_P"]) == 0.55
    saved = json.load(open(paths["json"]))
    assert saved["profile"]["name"] == "ci" and saved["command"] == "cmd"
    assert saved["rows"][1]["run_metrics"][0] is None and saved["rows"][1]["metrics"]["all"]["dice"]["runs"] == 1
    nothing = write_clot_report(5, CI, rows, {rows[0].key: [None, None]}, str(tmp_path / "none"), "cmd",
                                provenance(seed=0))
    assert "| 1 | AttLLSTM, 6 slices (paper: 10) | A+B | present | - | 0/2 (runs 1, 2 of 2 missing) | not run |" \
        in open(nothing["md"]).read()


def test_the_committed_easy_results_sit_beside_every_row_of_the_hard_tables(tmp_path):
    for table in (5, 6, 7):
        easy = read_reference_results(os.path.join(REPO, "benchmarks", "results", f"clot_quick_table{table}.json"))
        assert {r.key for r in table_rows(table, HARD)} <= set(easy)
    assert read_reference_results(str(tmp_path / "absent.json")) == {}
    rows = table_rows(6, HARD, ["UpAttLLSTM"])
    easy = {rows[1].key: _run(0.9, 0.8, [])["metrics"]}
    paths = write_clot_report(6, HARD, rows, {rows[1].key: [_run(0.5, 0.3, []), None, None]}, str(tmp_path / "t6"),
                              "cmd", provenance(seed=3), reference=easy, reference_label="one run on easy")
    text = open(paths["md"]).read()
    assert "## Beside: one run on easy" in text
    assert "| 2 | UpAttLLSTM | A+B | present | Big | 0.90 | 0.80 | 0.85 | 1.00 | 0.00 | 0.40 |" in text
    assert "| 1 | UpAttLLSTM | A+B | present | - | - | - | - | - | - | - |" in text
    assert "n_min = round(4.05 / 0.725) = 6 voxels" in text and "preset `hard`" in text


# ---------------------------------------------------------------------------------------------- datasets

def test_lesion_dataset_holds_out_center_c_and_keeps_dwi(tmp_path):
    spec = ClotCohortSpec(dataset_id=530, train_per_center=1, test_per_center=1, size=24, seed=3)
    source = write_clot_cohort(spec, str(tmp_path), progress=False)
    folder = derive_lesion_dataset(source, str(tmp_path), 532, "Lesion")
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["channel_names"] == {"0": "DWI"} and dataset["labels"] == {"background": 0, "lesion": 1}
    assert sorted(os.listdir(os.path.join(folder, "labelsTr"))) == ["clot_A_000.nii.gz", "clot_B_000.nii.gz"]
    assert sorted(os.listdir(os.path.join(folder, "imagesTs"))) == [f"clot_{c}_001_0000.nii.gz" for c in "ABC"]
    for split, labels in (("Tr", "labelsTr_lesion"), ("Ts", "labelsTs_lesion")):
        name = sorted(os.listdir(os.path.join(folder, f"labels{split}")))[0]
        assert open(os.path.join(folder, f"labels{split}", name), "rb").read() == \
            open(os.path.join(source, labels, name), "rb").read()
    assert open(os.path.join(folder, "imagesTr", "clot_A_000_0000.nii.gz"), "rb").read() == \
        open(os.path.join(source, "imagesTr", "clot_A_000_0000.nii.gz"), "rb").read()


def test_commands_a_harness_would_run_without_running_them(tmp_path):
    harness = ClotHarness(str(tmp_path), HARD, log=lambda m: None)
    fine_tune = harness.models.train_command(Network.of_model(GRADUAL, 8), run=3)
    assert fine_tune[:7] == ["nnUNetv2_train", "531", "3d_fullres", "2", "-p", "nnUNetPlans_UpAttLLSTM_s8", "-tr"]
    assert fine_tune[-1].endswith("Dataset531_ClotTrainAB/nnUNetTrainerUpAttLLSTM_100epochs_16it_2valit__"
                                  "nnUNetPlans_UpAttLLSTM_s8"
                                  "__3d_fullres/fold_2/checkpoint_best.pth")  # run 3 fine-tunes run 3's best model
    assert harness.models.seed(1) == 3 and harness.models.seed(3) == 5
    predict = harness.models.predict_command(Network("UpAttLLSTM", 8), "AB", "missing", run=2)
    assert predict[predict.index("-f") + 1] == "1" and predict[-3:] == ["--save_probabilities", "--missing", "PHASE"]
    assert predict[predict.index("-chk") + 1] == "checkpoint_best.pth"  # chosen on the validation split
    assert predict[predict.index("-o") + 1].endswith(os.path.join("predictions", "UpAttLLSTM_s8", "run2",
                                                                  "AB_missing"))
    assert harness.step_texts(("Lesion", "Thr", "Big")) == ["min_size:6", "lesion_distance:3.75", "threshold:0.3",
                                                            "largest"]
    assert harness.step_texts(()) == []  # raw rows stay raw
    with pytest.raises(ValueError, match="holds the clot runs of profile 'quick_hard'"):
        ClotHarness(str(tmp_path), CI)  # one workdir, one profile
    assert not os.path.exists(os.path.join(tmp_path, "commands.log"))


def test_a_second_harness_on_one_workdir_stops_at_every_step_the_first_holds(tmp_path):
    """Two harnesses on one workdir had planned dataset 531 at once (one crashed inside blosc2) and trained into
    one fold_0. A step another live process holds (its lock file) stops this one, naming the holder, before
    anything is run; nothing is planned, generated or trained here."""
    import socket
    harness = ClotHarness(str(tmp_path), CI, log=lambda m: None)
    locks = tmp_path / "locks"
    locks.mkdir()
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "job": ""}  # alive: the process that runs pytest
    harness.models.ensure_plans = lambda network: None  # the training's own lock is tested here, not planning
    models = harness.models
    for name, step in (("dataset_530", models.source_dataset), ("dataset_531", lambda: models.dataset(531)),
                       ("train_531_nnUNetTrainerUpAttLLSTM_1epochs_2it_1valit__nnUNetPlans_UpAttLLSTM_s8__3d_fullres"
                        "_fold0",
                        lambda: harness.models.train(Network("UpAttLLSTM", 8), 1)),
                       ("predict_UpAttLLSTM_s8_run1_AB_present",
                        lambda: harness.models.predict(Network("UpAttLLSTM", 8), "AB", "present", 1))):
        (locks / f"{name}.lock").write_text(json.dumps(holder))
        with pytest.raises(RuntimeError, match=f"{name}.lock: this run is in progress in process {os.getppid()}"):
            step()
        (locks / f"{name}.lock").unlink()
        if name == "dataset_530":
            harness.models.source_dataset()  # the cohort itself, for the next steps (no nnU-Net command)
        if name.startswith("train_"):  # as if that training had finished: prediction is next
            os.makedirs(models.fold_folder(Network("UpAttLLSTM", 8), 1))
            open(os.path.join(models.fold_folder(Network("UpAttLLSTM", 8), 1), "checkpoint_final.pth"), "w").close()
    assert not (tmp_path / "nnUNet_preprocessed").exists() and not (tmp_path / "clot" / "predictions").exists()
    assert "nnUNetv2" not in (open(tmp_path / "commands.log").read() if (tmp_path / "commands.log").exists() else "")


def test_cli_rejects_unknown_table_and_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_clot.main(["--table", "8", "--profile", "ci", "--workdir", str(tmp_path)])
    assert exit_info.value.code == 2 and "invalid choice: 8" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown model\\(s\\) 'Foo' for Table\\(s\\) 7"):
        reproduce_clot.main(["--table", "7", "--profile", "ci", "--workdir", str(tmp_path), "--models", "Foo"])
    assert not os.path.exists(tmp_path / "commands.log")


# ---------------------------------------------------------------------------------------------- end to end (ci)

MODELS = ["--profile", "ci", "--models", "AttLLSTM", "UpAttLLSTM", "--lesion", "reference"]
FIRST_RUN = ["--table", "6", "7", *MODELS, "--runs", "1"]
TABLE6 = ["--table", "6", *MODELS]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """Run 1 of Table 6 (AttLLSTM with the Lesion and Lesion+Thr chains against the reference lesion, to keep the
    test short; UpAttLLSTM raw and +Big) and of Table 7 (UpAttLLSTM rows, sharing Table 6's training), then both
    runs of Table 6: Table 6 is aggregated over two runs, Table 7 names its missing second run."""
    workdir = str(tmp_path_factory.mktemp("clot_ci"))
    reproduce_clot.main([*FIRST_RUN, "--workdir", workdir, "--out", os.path.join(workdir, "first")])
    reproduce_clot.main([*TABLE6, "--workdir", workdir, "--out", os.path.join(workdir, "t6")])
    log = open(os.path.join(workdir, "commands.log")).read()
    return {"workdir": workdir, "log": log}


def _report(workdir, name):
    prefix = os.path.join(workdir, name)
    return (open(prefix + ".md").read(), list(csv.DictReader(open(prefix + ".csv"))), json.load(open(prefix + ".json")))


def test_ci_tables_have_their_rows_and_sane_metrics_over_two_runs(ci_run):
    md7, csv7, json7 = _report(ci_run["workdir"], "first_table7")
    md6, csv6, json6 = _report(ci_run["workdir"], "t6")
    assert [(r["test_set"], r["phase"], r["postprocessing"]) for r in csv7] == [
        ("AB", "present", "-"), ("AB", "present", "Min+Big"), ("AB", "missing", "-"), ("AB", "missing", "Min+Big"),
        ("C", "present", "-"), ("C", "present", "Min+Big")]
    assert [(r["architecture"], r["postprocessing"]) for r in csv6] == [
        ("AttLLSTM", "-"), ("UpAttLLSTM", "-"), ("AttLLSTM", "Min+Lesion (reference lesion, oracle)"),
        ("AttLLSTM", "Min+Lesion+Thr (reference lesion, oracle)"), ("UpAttLLSTM", "Min+Big")]
    assert "not run" not in md6 + md7 and "of 2 missing" not in md6 and "Verdicts" in md6
    assert [r["missing"] for r in csv7] == ["run 2 of 2 missing"] * 6  # --runs 1
    assert "## Beside" not in md6  # the ci profile is on the easy preset: nothing beside by default
    # one epoch per training: each run's course is that epoch's pseudo Dice, read from nnU-Net's logs
    assert re.search(r"Validation pseudo Dice during training .*UpAttLLSTM_s8: run 1 best \d\.\d\d \(epoch 0\), last 1 "
                     r"epochs \d\.\d\d, 0 epochs at 0 after the best; run 2 best", md6)
    for saved, runs in ((json7, 1), (json6, 2)):
        assert saved["profile"]["name"] == "ci" and saved["provenance"]["versions"]["nnunetv2"]
        assert saved["command"].startswith("nnunet_ext_reproduce_clot --table")
        for row in saved["rows"]:
            assert row["runs_finished"] == runs and row["runs"] == 2 and len(row["run_metrics"]) == 2
            assert row["metrics"]["all"]["cases"] == (4 if row["test_set"] == "AB" else 2)
            for group, values in row["metrics"].items():
                dice = values["dice"]
                if not values["cases"]:
                    continue
                # the aggregate is the mean and std of the runs' own values (a missing run: None)
                values_of_runs = [m and m[group]["dice"] for m in row["run_metrics"]]
                assert dice["runs"] == runs and dice["values"] == values_of_runs
                assert values_of_runs[runs:] == [None] * (2 - runs)
                assert dice["mean"] == pytest.approx(sum(values_of_runs[:runs]) / runs)
                assert dice["std_runs"] == pytest.approx(abs(values_of_runs[0] - values_of_runs[1]) / 2
                                                         if runs == 2 else 0.0)
            assert row["result"]["commands"][0].startswith("nnUNetv2_train 531 3d_fullres 0")


def test_ci_run_used_the_stock_commands_one_fold_and_seed_per_run(ci_run):
    log, workdir = ci_run["log"], ci_run["workdir"]
    assert log.count("nnUNetv2_plan_and_preprocess -d 531") == 1
    # each run's UpAttLLSTM serves Tables 6 and 7, plus one prediction with swapped DWI (the DWI-swap check)
    for fold, seed, predictions in ((0, 0, 4), (1, 1, 2)):
        assert log.count(f"nnUNetv2_train 531 3d_fullres {fold} -p nnUNetPlans_UpAttLLSTM_s8") == 1
        assert log.count(f"nnUNetv2_train 531 3d_fullres {fold} -p nnUNetPlans_AttLLSTM_s8") == 1
        assert (f"nnUNetv2_train 531 3d_fullres {fold} -p nnUNetPlans_AttLLSTM_s8 "
                f"-tr nnUNetTrainerUpAttLLSTM_1epochs_2it_1valit "
                f"-device cpu [env {{'NNUNET_EXT_SEED': '{seed}'") in log
        assert log.count("-o " + os.path.join(workdir, "clot", "predictions", "UpAttLLSTM_s8",
                                              f"run{fold + 1}")) == predictions
    assert len(json.load(open(os.path.join(workdir, "nnUNet_preprocessed", "Dataset531_ClotTrainAB",
                                           "splits_final.json")))) == 2
    assert "--missing PHASE" in log and "--save_probabilities" in log
    for run in (1, 2):
        result = json.load(open(os.path.join(workdir, "clot", "results", f"run{run}",
                                             "AttLLSTM_s8__AB_present__Lesion+Thr_oracle.json")))
        assert result["steps"] == ["min_size:4", "lesion_distance:2.5", "threshold:0.3"]
        processed = json.load(open(os.path.join(result["folders"]["evaluated"], "postprocessing.json")))
        assert processed["steps"] == [["min_size", 4.0], ["lesion_distance", 2.5], ["threshold", 0.3]]
        assert processed["lesions"].endswith(os.path.join("references", "lesion_AB"))
        assert result["provenance"]["seed"] == run - 1 and result["fold"] == run - 1
        assert result["profile"]["epochs"] == 1


def test_ci_dwi_swap_check_of_the_attention_models(ci_run):
    """Each A+B test case predicted with the next case's DWI (resampled onto its grid), SWAN and PHASE its own;
    the agreement with the case's own prediction is reported beside Table 6."""
    workdir = ci_run["workdir"]
    raw = os.path.join(workdir, "nnUNet_raw", "Dataset531_ClotTrainAB", "imagesTs")
    swapped = os.path.join(workdir, "clot", "inputs", "AB_dwi_swapped")
    cases = sorted({f[:-len("_0000.nii.gz")] for f in os.listdir(swapped)})
    assert len(cases) == 4 and sorted(os.listdir(swapped)) == sorted(f"{c}_{i:04d}.nii.gz" for c in cases
                                                                      for i in range(3))
    read = lambda folder, case, i: sitk.ReadImage(os.path.join(folder, f"{case}_{i:04d}.nii.gz"))
    for case, donor in zip(cases, cases[1:] + cases[:1]):
        own = read(raw, case, 0)
        expected = sitk.Resample(read(raw, donor, 0), own, sitk.Transform(), sitk.sitkLinear, 0.0)
        assert np.array_equal(sitk.GetArrayFromImage(read(swapped, case, 0)), sitk.GetArrayFromImage(expected))
        assert read(swapped, case, 0).GetSpacing() == own.GetSpacing()
        for channel in (1, 2):
            assert np.array_equal(sitk.GetArrayFromImage(read(swapped, case, channel)),
                                  sitk.GetArrayFromImage(read(raw, case, channel)))
    md6 = _report(workdir, "t6")[0]
    for network in ("AttLLSTM_s8", "UpAttLLSTM_s8"):
        for run in (1, 2):
            result = json.load(open(os.path.join(workdir, "clot", "results", f"run{run}",
                                                 f"dwi_swapped__{network}.json")))
            assert result["cases"] == 4 and [c["case"] for c in result["per_case"]] == cases
            for case in result["per_case"]:  # no changed voxel: the same mask, Dice 1 (also when both are empty)
                assert case["voxels_changed"] > 0 or case["agreement_dice"] == 1.0
            assert result["cases_changed"] == sum(1 for c in result["per_case"] if c["voxels_changed"])
        assert f"DWI swapped between A+B test cases ({network}:" in md6


def test_ci_rerun_runs_nothing_and_report_only_names_missing_runs(ci_run, capsys):
    workdir = ci_run["workdir"]
    reproduce_clot.main([*FIRST_RUN, "--workdir", workdir, "--out", os.path.join(workdir, "again")])
    reproduce_clot.main([*TABLE6, "--workdir", workdir, "--out", os.path.join(workdir, "again")])
    assert open(os.path.join(workdir, "commands.log")).read() == ci_run["log"]  # every (row, run) was finished
    assert _report(workdir, "t6")[1] == _report(workdir, "again")[1]
    # a run that has not finished: report-only names it and keeps the other run's numbers
    finished = os.path.join(workdir, "clot", "results", "run2", "UpAttLLSTM_s8__AB_present__Big.json")
    kept = json.load(open(finished))
    os.remove(finished)
    capsys.readouterr()
    reproduce_clot.main(["--table", "6", "7", *MODELS, "--workdir", workdir, "--out",
                         os.path.join(workdir, "report"), "--report-only"])
    out = capsys.readouterr().out
    assert "- row 5 (UpAttLLSTM, Min+Big): run 2 of 2 missing" in out
    assert "- row 3 (UpAttLLSTM, -): run 2 of 2 missing" in out  # Table 7 without PHASE: only run 1 was computed
    assert "- row 1 (UpAttLLSTM, -)" not in out  # shared with Table 6, which has both runs
    # the output names every missing (row, run) once (a row shared by both tables once), Table 6's first
    assert ("still missing (5):\n  UpAttLLSTM_s8__AB_present__Big: run 2\n  UpAttLLSTM_s8__AB_missing__raw: run 2\n"
            "  UpAttLLSTM_s8__AB_missing__Big: run 2\n  UpAttLLSTM_s8__C_present__raw: run 2\n"
            "  UpAttLLSTM_s8__C_present__Big: run 2\n") in out
    table = _report(workdir, "report_table6")[1]
    assert [r["missing"] for r in table] == ["", "", "", "", "run 2 of 2 missing"]
    assert table[:4] == _report(workdir, "t6")[1][:4]
    # resumed: only the missing (row, run) is evaluated again, from the folders that are already there
    reproduce_clot.main([*TABLE6, "--workdir", workdir, "--out", os.path.join(workdir, "resumed")])
    assert open(os.path.join(workdir, "commands.log")).read() == ci_run["log"]
    assert json.load(open(finished))["metrics"] == kept["metrics"]
    assert _report(workdir, "resumed")[1] == _report(workdir, "t6")[1]
    # a comparison asked for and not there is an error, not an empty section
    with pytest.raises(SystemExit, match="--easy-results: .*absent_table6.json not found"):
        reproduce_clot.main([*TABLE6, "--workdir", workdir, "--out", os.path.join(workdir, "cmp"), "--report-only",
                             "--easy-results", os.path.join(workdir, "absent")])
    assert not os.path.exists(os.path.join(workdir, "cmp.md"))


def test_cli_validation_cases_are_checked_and_part_of_the_workdirs_profile(tmp_path):
    with pytest.raises(SystemExit, match="validation_cases must be a whole number >= 1, got 0"):
        reproduce_clot.main([*TABLE6, "--workdir", str(tmp_path / "a"), "--validation-cases", "0", "--report-only"])
    assert not os.path.exists(tmp_path / "a")
    with pytest.raises(SystemExit, match="no finished run"):  # the workdir is made with the profile's 1 case
        reproduce_clot.main([*TABLE6, "--workdir", str(tmp_path / "b"), "--report-only"])
    assert json.load(open(tmp_path / "b" / "clot" / "profile.json"))["validation_cases"] == 1
    with pytest.raises(SystemExit, match="holds the clot runs of profile 'ci' with other settings"):
        reproduce_clot.main([*TABLE6, "--workdir", str(tmp_path / "b"), "--validation-cases", "2", "--report-only"])


def test_cli_rejects_runs_beyond_the_profile(tmp_path):
    with pytest.raises(SystemExit, match="runs to compute must be 1..2 \\(profile 'ci'\\), got 3"):
        reproduce_clot.main([*TABLE6, "--workdir", str(tmp_path), "--runs", "3"])


def test_report_only_before_any_run_finished_says_so_and_runs_nothing(tmp_path):
    with pytest.raises(SystemExit, match="no finished run of any row of Table\\(s\\) 6, 7 to report"):
        reproduce_clot.main(["--table", "6", "7", "--profile", "ci", "--workdir", str(tmp_path), "--report-only"])
    assert not os.path.exists(tmp_path / "commands.log")


def test_validation_note_names_the_runs_whose_training_log_was_not_found():
    """A run with results but no training log to read (its results folder renamed or moved) is named, not left
    out of the note without a word."""
    course = validation_course({0: 0.1, 1: 0.5, 2: 0.0})  # best 0.5 at epoch 1, mean 0.2, one epoch at 0 after
    note = validation_note({"UpAttLLSTM_s8": [(1, course)], "LLSTM_s8": []},
                           ["LLSTM_s8 run 1 (/w/nnUNet_results/x/fold_0)"])
    assert note == ("Validation pseudo Dice during training (nnU-Net's, on the one validation case; every model "
                    "predicts with its checkpoint_best.pth): UpAttLLSTM_s8: run 1 best 0.50 (epoch 1), last 3 epochs "
                    "0.20, 1 epochs at 0 after the best. No training log with a pseudo Dice was found for LLSTM_s8 "
                    "run 1 (/w/nnUNet_results/x/fold_0), although their rows have results.")
    assert validation_note({}, ["LLSTM_s8 run 2 (f)"]).startswith(
        "Validation pseudo Dice during training (nnU-Net's, on the one validation case; every model predicts with "
        "its checkpoint_best.pth): none read. No training log")
    assert validation_note({"UpAttLLSTM_s8": [(1, course)]}, validation_cases=4).startswith(
        "Validation pseudo Dice during training (nnU-Net's, on 4 validation cases; every model predicts with its "
        "checkpoint_best.pth): UpAttLLSTM_s8: run 1 best 0.50")
