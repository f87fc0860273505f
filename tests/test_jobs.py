"""The harnesses' jobs through submitit: local parallel jobs, failures, the sbatch scripts a SLURM run submits."""
import json
import os
import pickle
import re
import stat
import subprocess
import sys
import time

import pytest

from nnunet_ext.experiments.failed_jobs import failed_jobs, unfinished_lines
from nnunet_ext.experiments.jobs import ExecutorSettings, Task, parse_sbatch_parameters, report_command, run_stages
from nnunet_ext.experiments.records import job_environment, run_logged


class Recorder:
    """A picklable job target: each call records when it ran, in a file per call."""

    def __init__(self, folder: str):
        self.folder = folder

    def work(self, name: str, seconds: float) -> str:
        started = time.time()
        time.sleep(seconds)
        with open(os.path.join(self.folder, f"{name}.json"), "w") as f:
            json.dump({"started": started, "finished": time.time(), "pid": os.getpid(),
                       "cpus": sorted(os.sched_getaffinity(0))}, f)
        return name

    def fail(self, name: str) -> None:
        raise ValueError(f"{name} went wrong on purpose")


class FailsOnce(Recorder):
    """A harness-like target (it has a workdir): its task fails on the first call and succeeds on the second."""

    def __init__(self, folder: str):
        super().__init__(folder)
        self.workdir = folder

    def flaky(self, name: str) -> str:
        marker = os.path.join(self.folder, f"{name}.tried")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"{name}: disk full\n(second line of the message)")
        return self.work(name, 0.0)


@pytest.fixture
def importable_tests(monkeypatch):
    """Local jobs unpickle Recorder by reference: its module must be importable in the job's interpreter."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.path.dirname(__file__),
                                                                    os.environ.get("PYTHONPATH")])))


def _times(folder, name):
    return json.load(open(os.path.join(folder, f"{name}.json")))


def test_sbatch_parameters_and_settings_are_checked():
    assert parse_sbatch_parameters(["account=lab", "--qos=high", "comment=a=b"]) == {
        "account": "lab", "qos": "high", "comment": "a=b"}
    with pytest.raises(ValueError, match="NAME=VALUE.*'account'"):
        parse_sbatch_parameters(["account"])
    with pytest.raises(ValueError, match="unknown executor 'pbs'"):
        ExecutorSettings(kind="pbs")
    with pytest.raises(ValueError, match="--max-parallel must be >= 1, got 0"):
        ExecutorSettings(max_parallel=0)
    with pytest.raises(ValueError, match="need 4 GPUs, but only \\[0, 1\\]"):
        ExecutorSettings(max_parallel=2, gpus_per_job=2, local_gpus=(0, 1))
    with pytest.raises(ValueError, match="SLURM parameters"):
        ExecutorSettings(kind="local", partition="gpu")


def test_report_command_drops_the_executor_options():
    argv = ["--table", "2", "--executor", "slurm", "--max-parallel", "8", "--sbatch", "account=lab", "qos=high",
            "--workdir", "W", "--partition=gpu"]
    assert report_command(argv, "nnunet_ext_reproduce") == \
        "nnunet_ext_reproduce --table 2 --workdir W --report-only"


def test_local_jobs_run_at_most_max_parallel_at_once_and_stages_in_order(tmp_path, importable_tests):
    target = Recorder(str(tmp_path))
    stages = [[Task("first", target, "work", "first", 0.0)],
              [Task(name, target, "work", name, 3.0) for name in ("a", "b", "c")]]
    settings = ExecutorSettings(folder=str(tmp_path / "jobs"), max_parallel=2)
    outcome = run_stages(stages, settings, log=lambda message: None)
    assert outcome.failed == {} and outcome.submitted == {}
    first, a, b, c = (_times(tmp_path, n) for n in ("first", "a", "b", "c"))
    assert first["finished"] <= min(a["started"], b["started"])  # stage 2 after stage 1
    assert a["started"] < b["finished"] and b["started"] < a["finished"]  # two at once
    assert c["started"] >= min(a["finished"], b["finished"])  # the third waits for a free slot
    assert len({first["pid"], a["pid"], b["pid"], c["pid"]}) == 4 and os.getpid() not in {a["pid"], b["pid"]}
    # the one-task stage keeps this process's CPUs; the two parallel jobs get half each (one CPU each on two)
    available = sorted(os.sched_getaffinity(0))
    half = max(1, len(available) // 2)
    halves = [available[:half], available[half:2 * half] or available[:1]]
    assert first["cpus"] == available
    assert sorted([a["cpus"], b["cpus"]]) == halves and c["cpus"] in halves


def test_a_task_pickled_before_tasks_had_cpus_still_runs(tmp_path):
    """A job queued (or requeued) across an upgrade unpickles a Task of the earlier version, without `cpus`."""
    task = Task("old", Recorder(str(tmp_path)), "work", "old", 0.0)
    assert "cpus" not in vars(task)  # as an earlier version pickled it: only the local executor sets it
    assert pickle.loads(pickle.dumps(task))() == "old"
    assert _times(tmp_path, "old")["cpus"] == sorted(os.sched_getaffinity(0))  # not pinned


def test_a_failed_local_job_is_named_and_the_later_stages_do_not_start(tmp_path, importable_tests):
    target = Recorder(str(tmp_path))
    stages = [[Task("good", target, "work", "good", 0.0), Task("bad", target, "fail", "bad")],
              [Task("later", target, "work", "later", 0.0)]]
    messages = []
    outcome = run_stages(stages, ExecutorSettings(folder=str(tmp_path / "jobs"), max_parallel=2), messages.append)
    assert list(outcome.failed) == ["bad"] and outcome.skipped_stages == 1
    assert "bad went wrong on purpose" in outcome.failed["bad"] and "_log.err" in outcome.failed["bad"]
    assert "bad failed: ValueError: bad went wrong on purpose" in outcome.failure_lines()
    assert os.path.isfile(tmp_path / "good.json") and not os.path.isfile(tmp_path / "later.json")
    assert any(m.startswith("FAILED bad") for m in messages)


def test_a_failed_job_is_remembered_in_the_workdir_until_it_succeeds(tmp_path, importable_tests):
    target = FailsOnce(str(tmp_path))
    settings = ExecutorSettings(folder=str(tmp_path / "jobs"), max_parallel=1)
    outcome = run_stages([[Task("train A run 2", target, "flaky", "a"), Task("train B run 2", target, "work", "b",
                                                                            0.0)]], settings, lambda m: None)
    assert list(outcome.failed) == ["train A run 2"]
    [record] = failed_jobs(str(tmp_path))   # read back as another process (a later --report-only) would
    assert record["task"] == "train A run 2" and record["error"] == "RuntimeError: a: disk full"
    assert record["log"].endswith("_log.out") and os.path.isfile(record["log"])
    assert "train A run 2 on" in open(record["log"]).read()   # the failed job's own log
    assert unfinished_lines(["A run 2"], str(tmp_path)) == [
        "still missing (1):", "  A run 2", "failed jobs (not succeeded since):",
        f"  train A run 2 failed at {record['time']}: RuntimeError: a: disk full (log {record['log']})"]
    outcome = run_stages([[Task("train A run 2", target, "flaky", "a")]], settings, lambda m: None)
    assert not outcome.failed and failed_jobs(str(tmp_path)) == [] and unfinished_lines([], str(tmp_path)) == []


FAKE_SBATCH = """#!/usr/bin/env python3
import os, shutil, sys
folder = os.environ["FAKE_SBATCH_DIR"]
number = len([f for f in os.listdir(folder) if f.endswith(".sh")]) + 1001
shutil.copy(sys.argv[-1], os.path.join(folder, f"{number}.sh"))
print(f"Submitted batch job {number}")
"""


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """An `sbatch` on PATH that keeps each script it is given and answers like SLURM, and an `srun` (no cluster
    needed)."""
    bin_folder, scripts = tmp_path / "bin", tmp_path / "submitted"
    bin_folder.mkdir()
    scripts.mkdir()
    program = bin_folder / "sbatch"
    program.write_text(FAKE_SBATCH)
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    srun = bin_folder / "srun"  # submitit looks for it to tell a SLURM node; the jobs never start here
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_DIR", str(scripts))
    return scripts


def _sbatch_lines(script):
    return [line for line in open(script).read().splitlines() if line.startswith("#SBATCH")]


def test_slurm_stages_are_job_arrays_with_the_cap_resources_and_dependencies(tmp_path, fake_sbatch):
    target = Recorder(str(tmp_path))
    stages = [[Task("prepare", target, "work", "p", 0.0)],
              [Task(n, target, "work", n, 0.0) for n in ("a", "b", "c")]]
    settings = ExecutorSettings(kind="slurm", folder=str(tmp_path / "jobs"), max_parallel=2, gpus_per_job=1,
                                cpus_per_job=8, mem_gb=40, partition="gpu", time_min=90, sbatch={"account": "lab"})
    outcome = run_stages(stages, settings, log=lambda message: None)
    assert outcome.submitted == {"prepare": "1001", "a": "1002_0", "b": "1002_1", "c": "1002_2"}
    first, second = _sbatch_lines(fake_sbatch / "1001.sh"), _sbatch_lines(fake_sbatch / "1002.sh")
    for lines in (first, second):
        for expected in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=40GB", "--time=90",
                         "--account=lab", "--signal=USR2@90", "--open-mode=append"):
            assert f"#SBATCH {expected}" in lines, (expected, lines)
    # a stage of one job is a plain job, not an array
    assert not any("--array" in line or "--dependency" in line for line in first)
    assert "#SBATCH --array=0-2%2" in second and "#SBATCH --dependency=afterok:1001" in second
    assert "#SBATCH --job-name=nnunet_ext_stage1" in first and "#SBATCH --job-name=nnunet_ext_stage2" in second
    assert not any(os.path.exists(tmp_path / f"{n}.json") for n in "pabc")  # submitted, not run


def test_reproduce_on_slurm_submits_every_cell_and_says_how_to_collect(tmp_path, fake_sbatch):
    workdir = tmp_path / "repro"
    result = subprocess.run(
        [sys.executable, "-m", "nnunet_ext.cli.reproduce", "--table", "3", "--profile", "full", "--workdir",
         str(workdir), "--executor", "slurm", "--partition", "gpu", "--gpus-per-job", "1", "--max-parallel", "12",
         "--time-min", "1440", "--sbatch", "account=lab"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    arrays = sorted(os.listdir(fake_sbatch))
    assert arrays == ["1001.sh", "1002.sh"]
    cells = _sbatch_lines(fake_sbatch / "1002.sh")
    # Table 3: 11 cells x 3 runs (folds 0-2) of the full profile, one job each, 12 at a time, after the datasets
    assert "#SBATCH --array=0-32%12" in cells and "#SBATCH --dependency=afterok:1001" in cells
    assert "#SBATCH --gpus-per-node=1" in cells and "#SBATCH --time=1440" in cells
    assert "34 SLURM job(s) submitted" in result.stdout
    assert "nnunet_ext_reproduce --table 3 --profile full --workdir " in result.stdout
    assert result.stdout.rstrip().endswith("--report-only")
    assert not os.path.exists(workdir / "nnUNet_raw")  # nothing ran here: the datasets are the first job's


def test_clot_tables_on_slurm_train_each_model_once_per_run_then_evaluate(tmp_path, fake_sbatch):
    workdir = tmp_path / "clot"
    result = subprocess.run(
        [sys.executable, "-m", "nnunet_ext.cli.reproduce_clot", "--table", "6", "7", "--profile", "ci",
         "--workdir", str(workdir), "--executor", "slurm", "--max-parallel", "4"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(fake_sbatch)) == ["1001.sh", "1002.sh", "1003.sh"]
    trainings = _sbatch_lines(fake_sbatch / "1002.sh")
    evaluations = _sbatch_lines(fake_sbatch / "1003.sh")
    # Table 6's nnU-Net, CLSTM, LLSTM, AttCLSTM, AttLLSTM, UpAttLLSTM and lesion model; Table 7's fine-tune in its
    # base's job (UpAttLLSTM then UpAttLLSTMGradualDrop): 7 jobs per run, 2 runs
    names = re.findall(r"submitted (\d+) job\(s\) as array (\d+): (.*)", result.stdout)
    assert [(n, a) for n, a, _ in names] == [("1", "1001"), ("14", "1002"), ("2", "1003")]
    assert "#SBATCH --array=0-13%4" in trainings and "#SBATCH --dependency=afterok:1001" in trainings
    assert "#SBATCH --array=0-1%2" in evaluations and "#SBATCH --dependency=afterok:1002" in evaluations
    assert names[2][2] == "evaluate run 1, evaluate run 2"


def test_a_jobs_commands_get_the_resources_of_the_job_not_of_the_submitting_shell():
    """The harness's environment is fixed where it was submitted (pickled with the task); SLURM's variables and
    the GPUs are those of the process the job runs in."""
    submitted = {"nnUNet_raw": "/data/raw", "OMP_NUM_THREADS": "4", "CUDA_VISIBLE_DEVICES": "0,1",
                 "SLURM_JOB_ID": "17", "SLURM_GPUS_ON_NODE": "2"}  # an interactive allocation on the login node
    job = {"PATH": "/bin", "SLURM_JOB_ID": "2301", "SLURM_CPUS_PER_TASK": "8", "CUDA_VISIBLE_DEVICES": "3",
           "OMP_NUM_THREADS": "1"}
    assert job_environment(submitted, job) == {"nnUNet_raw": "/data/raw", "OMP_NUM_THREADS": "4",
                                               "CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_ID": "2301",
                                               "SLURM_CPUS_PER_TASK": "8"}
    # a local job without assigned GPUs does not keep the submitting shell's GPU list either
    assert job_environment(submitted, {"PATH": "/bin"}) == {"nnUNet_raw": "/data/raw", "OMP_NUM_THREADS": "4"}


def test_run_logged_passes_the_job_resources_to_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    env = {"PATH": os.environ["PATH"], "CUDA_VISIBLE_DEVICES": "7", "HARNESS_SETTING": "kept"}
    run_logged([sys.executable, "-c", "import os; print(os.environ.get('SLURM_CPUS_PER_TASK'), "
                "os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ['HARNESS_SETTING'])"], str(tmp_path), "env", env)
    assert open(tmp_path / "logs" / "env.log").read() == "3 None kept\n"
