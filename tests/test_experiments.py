"""The Table 2/3 harness and the robustness report: settings, datasets, aggregation, files, one real mini-grid."""
import csv
import glob
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import _wait_for_line
from nnunet_ext.data.synthetic_cohort import CohortSpec, write_cohort
from nnunet_ext.experiments.datasets import derive_dataset
from nnunet_ext.experiments.comparison import verdict
from nnunet_ext.experiments.stroke.report import effect_check, summarize_cell, write_report
from nnunet_ext.experiments.stroke.robustness import channel_subsets
from nnunet_ext.experiments.stroke.settings import PROFILES, TABLES
from nnunet_ext.training.variants import parse_trainer_name


def test_grids_have_the_papers_cells_and_listed_trainers():
    assert [c.key for c in TABLES[2].cells][:4] == ["no_dropout", "MultiUnet_p02", "Gradual_p02", "ModDrop+_p02"]
    assert len(TABLES[2].cells) == 10 and len(TABLES[3].cells) == 11
    assert {c.key for c in TABLES[3].cells} >= {"lower_bound", "upper_bound"}
    for table in TABLES.values():
        for cell in table.cells:
            for profile in PROFILES.values():
                parse_trainer_name(cell.trainer(profile))  # every trainer name exists as a variant
    assert TABLES[2].cells[5].trainer(PROFILES["quick"]) == "nnUNetTrainerGradualDrop_p05_8epochs_60it_4valit"
    assert TABLES[3].cells[0].trainer(PROFILES["full"]) == "nnUNetTrainerNoDropout"  # nnU-Net's own budget


def test_channel_subsets_are_every_non_empty_subset_largest_first():
    assert channel_subsets(["DWI", "ADC"]) == [("DWI", "ADC"), ("DWI",), ("ADC",)]
    subsets = channel_subsets(["DWI", "ADC", "B0"])
    assert len(subsets) == 7 and subsets[0] == ("DWI", "ADC", "B0") and len(set(subsets)) == 7


def _run(dice_all, dice_missing, centers):
    return {"dice": {"all": dice_all, "missing": dice_missing}, "case_centers": centers}


def test_summary_known_values():
    centers = {"a1": "A", "a2": "A", "b1": "B"}
    runs = [_run({"a1": 1.0, "a2": 0.5, "b1": 0.5}, {"a1": 0.5, "a2": 0.5, "b1": 0.0}, centers),
            _run({"a1": 0.5, "a2": 0.5, "b1": 1.0}, {"a1": 0.5, "a2": 0.5, "b1": 0.5}, centers)]
    summary = summarize_cell(runs)
    a = summary["all"]["centers"]["A"]
    assert a["mean"] == pytest.approx(0.625) and a["std_runs"] == pytest.approx(0.125)
    assert a["std_cases"] == pytest.approx(np.std([1.0, 0.5, 0.5, 0.5]))
    # average over centers per run: run 1 (0.75 + 0.5) / 2, run 2 (0.5 + 1.0) / 2
    assert summary["all"]["average"]["mean"] == pytest.approx(0.6875)
    assert summary["missing"]["average"]["runs"] == 2


@pytest.mark.parametrize("method,baseline,expected", [
    ({"mean": 0.8, "std_runs": 0.01, "runs": 3}, {"mean": 0.6, "std_runs": 0.02, "runs": 3}, "better"),
    ({"mean": 0.6, "std_runs": 0.01, "runs": 3}, {"mean": 0.8, "std_runs": 0.02, "runs": 3}, "worse"),
    ({"mean": 0.62, "std_runs": 0.05, "runs": 3}, {"mean": 0.6, "std_runs": 0.05, "runs": 3}, "no clear difference"),
    ({"mean": 0.9, "std_runs": 0.0, "runs": 1}, {"mean": 0.1, "std_runs": 0.0, "runs": 3}, "not judged"),
])
def test_verdict_needs_a_difference_beyond_the_run_spread(method, baseline, expected):
    assert verdict(method, baseline).startswith(expected)


def test_effect_check():
    def cell(all_mean, missing_mean):
        return {row: {"average": {"mean": m}} for row, m in (("all", all_mean), ("missing", missing_mean))}
    check = effect_check({"no_dropout": cell(0.8, 0.6), "Gradual_p05": cell(0.8, 0.78), "MultiUnet_p05": cell(0.8, 0.7)},
                         "no_dropout")
    assert check["baseline_kept_fraction"] == 0.75 and check["baseline_loses_10_percent"]
    assert check["methods_keep_95_percent"] == {"Gradual_p05": True, "MultiUnet_p05": False}


@pytest.fixture(scope="module")
def source_cohort(tmp_path_factory):
    spec = CohortSpec(dataset_id=510, train_per_center=2, test_per_center=1, size=24, seed=1)
    return write_cohort(spec, str(tmp_path_factory.mktemp("raw")), progress=False)


def test_derived_dataset_keeps_channels_and_holds_a_center_out(source_cohort, tmp_path):
    folder = derive_dataset(source_cohort, str(tmp_path), 512, "T3", ("DWI", "ADC", "B0"), "B0", held_out_center="D")
    dataset = json.load(open(os.path.join(folder, "dataset.json")))
    assert dataset["droppable_channels"] == ["B0"] and dataset["numTraining"] == 6
    centers = json.load(open(os.path.join(folder, "case_centers.json")))
    trained = {centers[f[:-7]] for f in os.listdir(os.path.join(folder, "labelsTr"))}
    tested = {centers[f[:-7]] for f in os.listdir(os.path.join(folder, "labelsTs"))}
    assert trained == {"A", "B", "C"} and tested == {"A", "B", "C", "D"}

    two = derive_dataset(source_cohort, str(tmp_path), 511, "T2", ("DWI", "ADC"), "ADC")
    assert json.load(open(os.path.join(two, "dataset.json")))["channel_names"] == {"0": "DWI", "1": "ADC"}
    images = sorted(os.listdir(os.path.join(two, "imagesTr")))
    assert len(images) == 2 * 8 and not any(f.endswith("_0002.nii.gz") for f in images)
    # ADC is channel 1 in both: the same file content
    with open(os.path.join(two, "imagesTr", "stroke_A_000_0001.nii.gz"), "rb") as f1, \
            open(os.path.join(source_cohort, "imagesTr", "stroke_A_000_0001.nii.gz"), "rb") as f2:
        assert f1.read() == f2.read()


@pytest.mark.parametrize("kwargs,message", [
    (dict(channels=("DWI", "T2")), "channel\\(s\\) T2 not in"),
    (dict(droppable="B0"), "droppable channel 'B0' is not among"),
    (dict(held_out_center="E"), "center 'E' not in"),
])
def test_bad_derivations_are_refused(source_cohort, tmp_path, kwargs, message):
    arguments = dict(channels=("DWI", "ADC"), droppable="ADC", held_out_center=None)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        derive_dataset(source_cohort, str(tmp_path), 511, "T2", **arguments)
    assert os.listdir(tmp_path) == []


def test_table_three_report_files_parse(tmp_path):
    centers = {"a": "A", "d": "D"}

    def runs(all_a, missing_d):
        return [_run({"a": all_a, "d": 0.5}, {"a": all_a, "d": missing_d + delta}, centers) for delta in (0, 0.02)]
    summaries = {"lower_bound": summarize_cell(runs(0.8, 0.3)), "upper_bound": summarize_cell(runs(0.8, 0.7)),
                 "Gradual_p05": summarize_cell(runs(0.8, 0.6)), "MultiUnet_p02": summarize_cell(runs(0.7, 0.5))}
    labels = {c.key: c.label for c in TABLES[3].cells}
    paths = write_report(TABLES[3], PROFILES["ci"], summaries, labels, str(tmp_path / "table3"), "cmd",
                         {"versions": {}})
    markdown = open(paths["md"]).read()
    assert len(re.findall(r"^\| Exp\d+ \|", markdown, re.MULTILINE)) == 8 and "D (unseen)" in markdown and "(unseen 0.622)" in markdown
    assert "Gradual 0.5: better" in markdown
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 8 and float(rows[0]["D_mean"]) == pytest.approx(0.5)
    assert json.load(open(paths["json"]))["verdicts"]["Gradual_p05"] == "better"
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _job_holding(lock, process, timeout=600):
    """The pid of the job process that holds a run's lock (it writes its host, pid and SLURM job there)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isfile(lock):
            try:
                return json.load(open(lock))["pid"]
            except ValueError:
                pass  # being written
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{lock} not taken within {timeout} s")


@pytest.fixture(scope="module")
def mini_grid(nnunet_workspace, tmp_path_factory):
    """Two cells of one run of a few iterations as two local submitit jobs at once, one of them preempted
    mid-training (SIGUSR2) and requeued: every step of the real code path, run once for the tests below."""
    root = tmp_path_factory.mktemp("mini_grid")
    workdir, out = root / "repro", root / "table2_ci"
    fold = (workdir / "nnUNet_results" / "Dataset511_Table2_all_centers" /
            "nnUNetTrainerGradualDrop_p05_8epochs_2it_1valit__nnUNetPlans_CPU__3d_fullres" / "fold_0")
    harness = subprocess.Popen(
        ["nnunet_ext_reproduce", "--table", "2", "--profile", "ci", "--workdir", str(workdir), "--methods", "none",
         "Gradual", "--probabilities", "0.5", "--out", str(out), "--executor", "local", "--max-parallel", "2"],
        env={**nnunet_workspace.env, "NNUNET_EXT_SAVE_EVERY": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        job = _job_holding(str(workdir / "runs" / "table2" / "Gradual_p05" / "fold_0.json.lock"), harness)
        # "Epoch 3" is logged after the checkpoint of epoch 2 has been written
        _wait_for_line(str(fold), r"Epoch 3\s*$", harness)
        os.kill(job, signal.SIGUSR2)  # what SLURM sends before preempting a job or at its time limit
        stdout, stderr = harness.communicate(timeout=1200)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert harness.returncode == 0, stdout + stderr
    return {"workdir": workdir, "out": out, "stdout": stdout, "root": root,
            "log": open(workdir / "commands.log").read(),
            "result": json.load(open(workdir / "runs" / "table2" / "Gradual_p05" / "fold_0.json"))}


def test_mini_grid_preempted_job_is_requeued_and_continues_with_c(mini_grid):
    workdir = mini_grid["workdir"]
    assert "started Table 2: no_dropout fold 0" in mini_grid["stdout"]
    assert "finished Table 2: Gradual_p05 fold 0" in mini_grid["stdout"]
    trained = re.findall(r"nnUNetv2_train 511 3d_fullres 0 -p nnUNetPlans_CPU -tr nnUNetTrainerGradualDrop_p05_8"
                         r"epochs_2it_1valit -device cpu( --c)? ", mini_grid["log"])
    assert trained == ["", " --c"]  # requeued, continued from checkpoint_latest.pth
    job_logs = "".join(open(p).read() for p in glob.glob(str(workdir / "jobs" / "*" / "*_log.*")))
    assert "Caught signal SIGUSR2" in job_logs and "this job is preempted" in job_logs
    assert "Gradual_p05 fold 0: preempted or out of time, requeued" in job_logs and "Requeued job" in job_logs
    assert not os.path.exists(workdir / "runs" / "table2" / "Gradual_p05" / "fold_0.json.lock")


def test_mini_grid_jobs_ran_at_once_each_on_its_own_cpus(mini_grid):
    workdir = mini_grid["workdir"]
    timings = [json.load(open(workdir / "runs" / "table2" / c / "fold_0.json"))["timing"]
               for c in ("no_dropout", "Gradual_p05")]
    assert timings[0]["started"] < timings[1]["finished"] and timings[1]["started"] < timings[0]["finished"]
    # the two parallel jobs were pinned to half the CPUs each, and their trainings sized their threads by it
    # (nnUNetv2_train alone would start one thread per core of the machine in each)
    half = max(1, len(os.sched_getaffinity(0)) // 2)
    training_logs = glob.glob(str(workdir / "nnUNet_results" / "*" / "*" / "fold_0" / "training_log_*.txt"))
    assert len(training_logs) == 3  # the requeued training wrote a second log
    for training_log in training_logs:
        assert f"CPU threads: {half} (limits: affinity {half} CPU" in open(training_log).read()


def test_mini_grid_results_and_report(mini_grid):
    result = mini_grid["result"]
    assert result["trainer"] == "nnUNetTrainerGradualDrop_p05_8epochs_2it_1valit" and result["dataset_id"] == 511
    assert sorted(result["dice"]) == ["all", "missing"] and len(result["dice"]["all"]) == 4
    assert result["provenance"]["seed"] == 0 and "nnunetv2" in result["provenance"]["versions"]
    out = mini_grid["out"]
    report = json.load(open(str(out) + ".json"))
    assert set(report["summaries"]) == {"no_dropout", "Gradual_p05"} and report["profile"] == "ci"
    table = open(str(out) + ".md").read()
    assert "| Exp1 | no dropout | ADC absent |" in table and "| Exp2 | Gradual 0.5 | ADC absent |" in table
    assert "nnUNetv2_train 511 3d_fullres 0 -p nnUNetPlans_CPU -tr nnUNetTrainerGradualDrop_p05_8epochs_2it_1valit" in \
        mini_grid["log"]


def test_mini_grid_rerun_trains_nothing_and_another_profile_is_refused(mini_grid, nnunet_workspace):
    workdir, log = mini_grid["workdir"], mini_grid["log"]
    # resumable: a second call finds the run done and only rewrites the report
    again = nnunet_workspace.run(["nnunet_ext_reproduce", "--table", "2", "--profile", "ci", "--workdir",
                                  str(workdir), "--methods", "Gradual", "--probabilities", "0.5"])
    assert "training" not in again.stdout and log == open(workdir / "commands.log").read()
    # a workdir holds one profile: mixing runs of two profiles in one table is refused
    mixed = nnunet_workspace.run(["nnunet_ext_reproduce", "--table", "2", "--profile", "quick", "--workdir",
                                  str(workdir), "--methods", "Gradual", "--probabilities", "0.5"], check=False)
    assert mixed.returncode != 0 and "not {" in mixed.stderr and "use another --workdir" in mixed.stderr
    assert log == open(workdir / "commands.log").read()


def test_robustness_of_the_mini_grid_model(mini_grid, nnunet_workspace):
    workdir = mini_grid["workdir"]
    raw = workdir / "nnUNet_raw" / "Dataset511_Table2_all_centers"
    env = {"nnUNet_raw": str(workdir / "nnUNet_raw"), "nnUNet_preprocessed": str(workdir / "nnUNet_preprocessed"),
           "nnUNet_results": str(workdir / "nnUNet_results")}
    robustness = mini_grid["root"] / "robustness"
    nnunet_workspace.run(["nnunet_ext_robustness", "-i", str(raw / "imagesTs"), "-r", str(raw / "labelsTs"),
                          "-o", str(robustness), "-d", "511", "-c", "3d_fullres", "-f", "0", "-p", "nnUNetPlans_CPU",
                          "-tr", "nnUNetTrainerGradualDrop_p05_8epochs_2it_1valit",
                          "--centers", str(raw / "case_centers.json"),
                          "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], env)
    matrix = json.load(open(robustness / "robustness.json"))["matrix"]
    assert list(matrix) == ["DWI+ADC", "DWI", "ADC"]
    assert set(matrix["DWI"]) == {"A", "B", "C", "D", "all"}
    # the same model and test cases as the harness's Gradual_p05 run: all channels, and ADC absent (DWI alone),
    # predicted through another command, give the harness's own mean Dice
    for channels, row in (("DWI+ADC", "all"), ("DWI", "missing")):
        harness_dice = list(mini_grid["result"]["dice"][row].values())
        assert matrix[channels]["all"]["mean"] == pytest.approx(sum(harness_dice) / len(harness_dice))
    rows = list(csv.reader(open(robustness / "robustness.csv")))
    assert rows[0] == ["channels_present", "A", "B", "C", "D", "all"] and len(rows) == 4
    assert open(robustness / "robustness.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_source_cohort_of_another_profile_is_refused(tmp_path):
    from nnunet_ext.experiments.stroke.harness import SOURCE_ID, Harness
    write_cohort(CohortSpec(dataset_id=SOURCE_ID, name="SyntheticStrokeSource", size=24, train_per_center=1,
                            test_per_center=0), str(tmp_path / "nnUNet_raw"), progress=False)
    harness = Harness(str(tmp_path), TABLES[2], PROFILES["ci"], log=lambda message: None)
    with pytest.raises(ValueError, match="generated for another profile"):
        harness.source_dataset()


def test_planning_a_dataset_another_harness_holds_is_refused(tmp_path):
    """Two harnesses on one workdir: the planning stage is locked too (only run_cell was), per dataset."""
    import socket
    from nnunet_ext.experiments.stroke.harness import Harness
    harness = Harness(str(tmp_path), TABLES[2], PROFILES["ci"], log=lambda message: None)
    (tmp_path / "locks").mkdir()
    for dataset_id, step in ((510, harness.source_dataset), (511, lambda: harness.dataset("all_centers"))):
        lock = tmp_path / "locks" / f"dataset_{dataset_id}.lock"
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "job": ""}))
        with pytest.raises(RuntimeError, match=f"dataset_{dataset_id}.lock: this run is in progress in process "
                                               f"{os.getppid()}"):
            step()
        lock.unlink()
    assert not (tmp_path / "nnUNet_raw").exists() and not (tmp_path / "nnUNet_preprocessed").exists()


def test_run_lock_refuses_a_live_owner_and_takes_over_a_stale_one(tmp_path, monkeypatch):
    import socket
    from nnunet_ext.experiments.locks import run_lock
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    lock = str(tmp_path / "runs" / "fold_0.json.lock")
    with run_lock(lock):
        assert json.load(open(lock)) == {"host": socket.gethostname(), "pid": os.getpid(), "job": ""}
        with pytest.raises(RuntimeError, match=f"in progress in process {os.getpid()} on {socket.gethostname()}"):
            with run_lock(lock):
                pass
    assert not os.path.exists(lock)
    dead = subprocess.Popen(["true"])
    dead.wait()
    for stale in (str(dead.pid),  # a killed harness's lock, from before locks named their host
                  json.dumps({"host": socket.gethostname(), "pid": dead.pid, "job": ""}), '{"host": '):
        with open(lock, "w") as f:
            f.write(stale)
        with run_lock(lock):
            assert json.load(open(lock))["pid"] == os.getpid()
        assert not os.path.exists(lock)
    # another node's job: nothing here can tell whether it is alive, so the lock stands ...
    with open(lock, "w") as f:
        json.dump({"host": "node17", "pid": 4242, "job": "900_3"}, f)
    with pytest.raises(RuntimeError, match="process 4242 on node17 \\(job 900_3\\)"):
        with run_lock(lock):
            pass
    # ... unless this process is that very job, requeued after a preemption (on whatever node)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "900")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    with run_lock(lock):
        assert json.load(open(lock))["job"] == "900_3"
    assert not os.path.exists(lock)


# ---- B0 rebuilt by physics: Table 3's third row, the robustness rows, the derived sidecars --------------------

def test_table_three_rebuilt_rows_are_summarized_reported_and_judged_against_zero_filled(tmp_path):
    centers = {"a": "A", "d": "D"}

    def runs(missing_d, rebuilt_d):
        return [{"dice": {"all": {"a": 0.8, "d": 0.7}, "missing": {"a": 0.8, "d": missing_d + delta},
                          "rebuilt": {"a": 0.8, "d": rebuilt_d + delta}}, "case_centers": centers}
                for delta in (0, 0.02)]
    lower = summarize_cell(runs(0.3, 0.65))
    assert lower["rebuilt"]["centers"]["D"]["mean"] == pytest.approx(0.66)
    assert lower["rebuilt"]["average"]["mean"] == pytest.approx((0.8 + 0.66) / 2)
    # a run without the row (an older run, a table without it): the row is left out, not half-averaged
    assert "rebuilt" not in summarize_cell([_run({"a": 0.8, "d": 0.7}, {"a": 0.8, "d": 0.3}, centers)])
    summaries = {"lower_bound": lower, "Gradual_p05": summarize_cell(runs(0.6, 0.61))}
    labels = {c.key: c.label for c in TABLES[3].cells}
    paths = write_report(TABLES[3], PROFILES["quick_physics"], summaries, labels, str(tmp_path / "t3"), "cmd",
                         {"versions": {}})
    markdown = open(paths["md"]).read()
    assert "| Exp1 | no dropout, D unseen (lower bound) | B0 rebuilt | 0.800 ± 0.000 | 0.660 ± 0.010 |" in markdown
    assert "- no dropout, D unseen (lower bound): 0.730 vs 0.555: better" in markdown
    assert "- Gradual 0.5: 0.710 vs 0.705: no clear difference" in markdown
    rows = list(csv.DictReader(open(paths["csv"])))
    assert [r["row"] for r in rows] == ["all", "missing", "rebuilt"] * 2 and rows[2]["paper_average"] == ""
    assert json.load(open(paths["json"]))["rebuild_verdicts"] == {"lower_bound": "better",
                                                                  "Gradual_p05": "no clear difference"}


def test_only_a_table_with_both_sources_on_physical_images_gets_the_rebuilt_row(tmp_path):
    from nnunet_ext.experiments.stroke.harness import Harness
    quiet = dict(log=lambda message: None)
    assert Harness(str(tmp_path / "a"), TABLES[3], PROFILES["quick_physics"], **quiet).rebuild_row
    assert not Harness(str(tmp_path / "b"), TABLES[3], PROFILES["quick"], **quiet).rebuild_row  # not physical
    assert Harness(str(tmp_path / "c"), TABLES[3], PROFILES["quick"], source=str(tmp_path), **quiet).rebuild_row
    assert not Harness(str(tmp_path / "d"), TABLES[2], PROFILES["quick_physics"], **quiet).rebuild_row  # no B0


def test_robustness_rebuild_rows_are_the_subsets_holding_both_sources():
    from nnunet_ext.experiments.stroke.robustness import rebuildable_subsets
    assert rebuildable_subsets(["DWI", "ADC", "B0"]) == [(("DWI", "ADC"), "B0"), (("DWI", "B0"), "ADC"),
                                                         (("ADC", "B0"), "DWI")]
    assert rebuildable_subsets(["DWI", "ADC"]) == []  # Table 2's model has no B0 to rebuild or rebuild from
    assert rebuildable_subsets(["DWI", "SWAN", "PHASE"]) == []


def test_derived_datasets_keep_the_dwi_sidecars(tmp_path):
    source = write_cohort(CohortSpec(dataset_id=520, name="Physical", train_per_center=1, test_per_center=1,
                                     size=24, physics=True), str(tmp_path / "source"), progress=False)
    derived = derive_dataset(source, str(tmp_path / "raw"), 512, "T3", ("DWI", "ADC", "B0"), "B0",
                             held_out_center="D")
    assert json.load(open(os.path.join(derived, "imagesTs", "stroke_C_001_0000.json"))) == {"DiffusionBValue": 800.0}
    assert not os.path.exists(os.path.join(derived, "imagesTr", "stroke_D_000_0000.json"))  # held out


def test_missing_runs_are_named_as_their_jobs(tmp_path):
    from nnunet_ext.experiments.stroke.harness import Harness
    with pytest.raises(ValueError, match="unknown method\\(s\\) 'gradual' for Table 2; expected some of none, "
                                         "MultiUnet, Gradual, ModDrop\\+, no_dropout"):
        Harness(str(tmp_path), TABLES[2], PROFILES["ci"], methods=["none", "gradual"], log=lambda message: None)
    with pytest.raises(ValueError, match="drop probability 0.3 not in Table 2 \\(it has 0.2, 0.5, 0.8\\)"):
        Harness(str(tmp_path), TABLES[2], PROFILES["ci"], probabilities=[0.5, 0.3], log=lambda message: None)
    harness = Harness(str(tmp_path), TABLES[2], PROFILES["ci"], methods=["none", "Gradual"], probabilities=[0.5],
                      log=lambda message: None)
    assert harness.missing_runs() == ["Table 2: no_dropout fold 0", "Table 2: Gradual_p05 fold 0"]
    finished = tmp_path / "runs" / "table2" / "no_dropout" / "fold_0.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    assert harness.missing_runs() == ["Table 2: Gradual_p05 fold 0"]
