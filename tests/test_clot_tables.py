"""The thrombus tables (5-7) harness: layouts, the paper's numbers, metrics, report files, and the ci profile end to
end through the stock nnU-Net commands (a Table 7 and a Table 6 subset that share a training)."""
import csv
import importlib
import json
import os

import pytest

from nnunet_ext.cli import reproduce_clot
from nnunet_ext.data.clot_cohort import ClotCohortSpec, write_clot_cohort
from nnunet_ext.evaluation.evaluate import summarize
from nnunet_ext.evaluation.lesion_metrics import SCALAR_METRICS
from nnunet_ext.experiments.clot_harness import ClotHarness, derive_lesion_dataset, validation_split
from nnunet_ext.experiments.clot_tables import (CLOT_PROFILES, GRADUAL, NNUNET, PAPER_TABLE5, PAPER_TABLE6,
                                                PAPER_TABLE7, ClotProfile, Network, PaperRow, check_models,
                                                paper_text, row_networks, table_metrics, table_rows,
                                                write_clot_report)
from nnunet_ext.provenance import provenance

QUICK, CI = CLOT_PROFILES["quick"], CLOT_PROFILES["ci"]


# ---------------------------------------------------------------------------------------------- layouts

def _layout(rows):
    return [(r.network.architecture, r.network.slices, r.test_set, r.phase, r.chain) for r in rows]


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
    assert [(r.network.architecture, r.chain) for r in rows] == expected
    assert all(r.test_set == "AB" and r.phase == "present" for r in rows)
    assert rows[0].network.slices is None and rows[1].network.slices == 8
    assert rows[7].paper.dice == (0.43, 0.36) and rows[11].paper.det == (1.0, 0.91)


def test_table7_rows_and_shared_cells():
    rows = table_rows(7, QUICK)
    assert len(rows) == 12
    assert [(r.test_set, r.phase, r.chain) for r in rows[:6]] == [
        ("AB", "present", ()), ("AB", "present", ("Big",)), ("AB", "missing", ()), ("AB", "missing", ("Big",)),
        ("C", "present", ()), ("C", "present", ("Big",))]
    assert {r.network.architecture for r in rows[6:]} == {GRADUAL}
    assert rows[10].paper.dice_all == 0.28 and rows[11].paper.det_all == 0.77 and rows[3].paper is None
    # the same row in two tables is one result: AttLLSTM at 8 slices (5, 6), UpAttLLSTM raw and +Big (6, 7)
    table5, table6 = {r.key for r in table_rows(5, QUICK)}, {r.key for r in table_rows(6, QUICK)}
    assert table5 & table6 == {"AttLLSTM_s8__AB_present__raw"}
    assert table6 & {r.key for r in rows} == {"UpAttLLSTM_s8__AB_present__raw", "UpAttLLSTM_s8__AB_present__Big"}


def test_oracle_lesion_rows_have_their_own_key_and_label():
    model, oracle = (table_rows(6, QUICK, ["AttLLSTM"], lesion) for lesion in ("model", "reference"))
    assert model[2].key == "AttLLSTM_s8__AB_present__Lesion+Thr"
    assert oracle[2].key == "AttLLSTM_s8__AB_present__Lesion+Thr_oracle"
    assert oracle[2].postprocessing == "Lesion+Thr (reference lesion, oracle)"


def test_networks_needed_in_training_order():
    keys = [n.key for n in row_networks(table_rows(7, QUICK), QUICK)]
    assert keys == ["UpAttLLSTM_s8", "UpAttLLSTMGradualDrop_s8"]  # the fine-tune after the model it starts from
    scratch = ClotProfile(**{**QUICK.__dict__, "gradual_init": "scratch"})
    assert [n.key for n in row_networks(table_rows(7, scratch, [GRADUAL]), scratch)] == ["UpAttLLSTMGradualDrop_s8"]
    assert [n.key for n in row_networks(table_rows(6, QUICK, [NNUNET]), QUICK)] == ["nnunet", "lesion_nnunet"]
    assert [n.key for n in row_networks(table_rows(6, QUICK, [NNUNET], "reference"), QUICK)] == ["nnunet"]


def test_every_trainer_of_every_profile_is_listed_for_nnunet():
    """nnU-Net finds trainers by module-level name in trainers/ only."""
    modules = [importlib.import_module(f"nnunet_ext_trainers.{m}")
               for m in ("modality_dropout_trainers", "upattllstm_trainers")]
    for profile in CLOT_PROFILES.values():
        for table in (5, 6, 7):
            for network in row_networks(table_rows(table, profile), profile):
                name = network.trainer(profile)
                assert any(hasattr(m, name) for m in modules), name
    assert Network(GRADUAL, 8).plans == "nnUNetPlans_UpAttLLSTM_s8"
    assert Network(NNUNET).trainer(QUICK) == "nnUNetTrainerNoDropout_100epochs"


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
    ({"gradual_init": "warm"}, "gradual_init must be 'pretrained' or 'scratch'"),
    ({"slices": ((6, 10), (8, 14))}, "exactly one slice count must stand for the paper's 12"),
])
def test_bad_profiles(changes, message):
    with pytest.raises(ValueError, match=message):
        ClotProfile(**{**QUICK.__dict__, **changes})


def test_profile_derived_values():
    assert QUICK.lesion_distance_mm == 3.75  # 20 px of 256 over a 48 mm field of view
    assert CI.trainer_suffix() == "_1epochs"
    assert ClotProfile(**{**QUICK.__dict__, "epochs": 1000}).trainer_suffix() == ""


def test_validation_split_keeps_one_case_out():
    assert validation_split(["b", "c", "a"]) == [{"train": ["b", "c"], "val": ["a"]}]
    with pytest.raises(ValueError, match="at least 2 training cases"):
        validation_split(["a"])


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


def test_report_files_with_a_row_not_run(tmp_path):
    rows = table_rows(5, CI)
    rows_metrics = [_case("p1", "proximal", 0.5, [0.001], [], 1.0), _case("d1", "distal", 0.25, [], [], 1.0)]
    results = {rows[0].key: {"metrics": table_metrics(summarize(rows_metrics)["1"]), "trainer": "T", "plans": "P",
                             "commands": ["nnUNetv2_train ..."]}}
    paths = write_clot_report(5, CI, rows, results, str(tmp_path / "t5"), "cmd", provenance(seed=0), ["extra note"])
    text = open(paths["md"]).read()
    assert "| 1 | AttLLSTM, 6 slices (paper: 10) | A+B | present | - | 1.00 | 0.00 | 1.0 | - |" in text
    assert "| 2 | AttLLSTM, 8 slices (paper: 12) | A+B | present | - | not run |" in text and "- extra note" in text
    table = list(csv.DictReader(open(paths["csv"])))
    assert [r["key"] for r in table] == [r.key for r in rows]
    assert float(table[0]["dice_distal"]) == 0.25 and table[1]["dice_distal"] == ""
    assert float(table[1]["paper_dice_P"]) == 0.55
    saved = json.load(open(paths["json"]))
    assert saved["profile"]["name"] == "ci" and saved["rows"][1]["metrics"] is None and saved["command"] == "cmd"


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
    harness = ClotHarness(str(tmp_path), QUICK, log=lambda m: None)
    fine_tune = harness.train_command(Network(GRADUAL, 8))
    assert fine_tune[:7] == ["nnUNetv2_train", "531", "3d_fullres", "0", "-p", "nnUNetPlans_UpAttLLSTM_s8", "-tr"]
    assert fine_tune[-1].endswith("Dataset531_ClotTrainAB/nnUNetTrainerUpAttLLSTM_100epochs__nnUNetPlans_UpAttLLSTM_s8"
                                  "__3d_fullres/fold_0/checkpoint_final.pth")
    predict = harness.predict_command(Network("UpAttLLSTM", 8), "AB", "missing")
    assert predict[-3:] == ["--save_probabilities", "--missing", "PHASE"]
    assert harness.step_texts(("Lesion", "Thr", "Big")) == ["lesion_distance:3.75", "threshold:0.3", "largest"]
    with pytest.raises(ValueError, match="holds the clot runs of profile 'quick'"):
        ClotHarness(str(tmp_path), CI)  # one workdir, one profile
    assert not os.path.exists(os.path.join(tmp_path, "commands.log"))


def test_cli_rejects_unknown_table_and_model(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce_clot.main(["--table", "8", "--profile", "ci", "--workdir", str(tmp_path)])
    assert exit_info.value.code == 2 and "invalid choice: 8" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown model\\(s\\) 'Foo' for Table\\(s\\) 7"):
        reproduce_clot.main(["--table", "7", "--profile", "ci", "--workdir", str(tmp_path), "--models", "Foo"])
    assert not os.path.exists(tmp_path / "commands.log")


# ---------------------------------------------------------------------------------------------- end to end (ci)

TABLE7 = ["--table", "7", "--profile", "ci", "--models", "UpAttLLSTM"]
TABLE6 = ["--table", "6", "--profile", "ci", "--models", "AttLLSTM", "UpAttLLSTM", "--lesion", "reference"]


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """Table 7 (UpAttLLSTM rows), then a Table 6 subset that reuses its training and predictions and adds AttLLSTM
    with the Lesion and Lesion+Thr chains (reference lesion, to keep the test short)."""
    workdir = str(tmp_path_factory.mktemp("clot_ci"))
    for arguments, name in ((TABLE7, "t7"), (TABLE6, "t6")):
        reproduce_clot.main([*arguments, "--workdir", workdir, "--out", os.path.join(workdir, name)])
    log = open(os.path.join(workdir, "commands.log")).read()
    return {"workdir": workdir, "log": log}


def _report(workdir, name):
    prefix = os.path.join(workdir, name)
    return (open(prefix + ".md").read(), list(csv.DictReader(open(prefix + ".csv"))), json.load(open(prefix + ".json")))


def test_ci_tables_have_their_rows_and_sane_metrics(ci_run):
    md7, csv7, json7 = _report(ci_run["workdir"], "t7")
    md6, csv6, json6 = _report(ci_run["workdir"], "t6")
    assert [(r["test_set"], r["phase"], r["postprocessing"]) for r in csv7] == [
        ("AB", "present", "-"), ("AB", "present", "Big"), ("AB", "missing", "-"), ("AB", "missing", "Big"),
        ("C", "present", "-"), ("C", "present", "Big")]
    assert [(r["architecture"], r["postprocessing"]) for r in csv6] == [
        ("AttLLSTM", "-"), ("UpAttLLSTM", "-"), ("AttLLSTM", "Lesion (reference lesion, oracle)"),
        ("AttLLSTM", "Lesion+Thr (reference lesion, oracle)"), ("UpAttLLSTM", "Big")]
    assert md7.count("\n| ") == 7 and md6.count("\n| ") == 6 and "not run" not in md6 + md7
    for saved in (json7, json6):
        assert saved["profile"]["name"] == "ci" and saved["provenance"]["versions"]["nnunetv2"]
        assert saved["command"].startswith("nnunet_ext_reproduce_clot --table")
        for row in saved["rows"]:
            assert row["metrics"]["all"]["cases"] == (4 if row["test_set"] == "AB" else 2)
            for group, values in row["metrics"].items():
                assert values["cases"] == 0 or 0 <= values["dice"] <= 1
                assert values["detection"] is None or 0 <= values["detection"] <= 1
                assert values["cases"] == 0 or (values["fp_count"] >= 0 and values["fn_count"] >= 0)
            assert row["result"]["commands"][0].startswith("nnUNetv2_train 531 3d_fullres 0")


def test_ci_run_used_the_stock_commands_and_shared_the_training(ci_run):
    log, workdir = ci_run["log"], ci_run["workdir"]
    assert log.count("nnUNetv2_plan_and_preprocess -d 531") == 1
    assert log.count("nnUNetv2_train 531 3d_fullres 0 -p nnUNetPlans_UpAttLLSTM_s8") == 1  # Tables 6 and 7
    assert log.count("nnUNetv2_train 531 3d_fullres 0 -p nnUNetPlans_AttLLSTM_s8") == 1
    assert log.count("-o " + os.path.join(workdir, "clot", "predictions", "UpAttLLSTM_s8")) == 3
    assert "--missing PHASE" in log and "--save_probabilities" in log
    result = json.load(open(os.path.join(workdir, "clot", "results",
                                         "AttLLSTM_s8__AB_present__Lesion+Thr_oracle.json")))
    assert result["steps"] == ["lesion_distance:2.5", "threshold:0.3"]
    processed = json.load(open(os.path.join(result["folders"]["evaluated"], "postprocessing.json")))
    assert processed["steps"] == [["lesion_distance", 2.5], ["threshold", 0.3]]
    assert processed["lesions"].endswith(os.path.join("references", "lesion_AB"))
    assert result["provenance"]["seed"] == 0 and result["profile"]["epochs"] == 1


def test_ci_rerun_runs_nothing_and_report_only_writes_the_same_table(ci_run):
    workdir = ci_run["workdir"]
    for arguments, name in ((TABLE7, "t7"), (TABLE6, "t6")):
        reproduce_clot.main([*arguments, "--workdir", workdir, "--out", os.path.join(workdir, name + "_again")])
    reproduce_clot.main([*TABLE6, "--workdir", workdir, "--out", os.path.join(workdir, "t6_report"), "--report-only"])
    assert open(os.path.join(workdir, "commands.log")).read() == ci_run["log"]
    first, again, report = (_report(workdir, n)[1] for n in ("t6", "t6_again", "t6_report"))
    assert first == again == report
