"""`--executor slurm` on a real single-node SLURM (tests/slurm_cluster.py starts it with .ci/slurm.sh; the tests
are skipped where it cannot run, and fail under CI).

tests/test_jobs.py checks the #SBATCH lines against a fake sbatch; here the scheduler itself runs the jobs:
both harnesses' `ci` profile as dependent job arrays to COMPLETED and --report-only; a training requeued with
`scontrol requeue` and one that reaches its time limit (ExecutorSettings.time_min, i.e. --time-min), each
continued with --c to the epoch count of an uninterrupted run; a failed job, its log, and the later stage that
SLURM cancels instead of keeping it queued.
"""
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Iterator, List, Optional

import pytest
import torch

from nnunet_ext.experiments.stroke.harness import Harness
from nnunet_ext.experiments.jobs import ExecutorSettings, run_stages
from nnunet_ext.experiments.stroke.settings import PROFILES, TABLES
from slurm_cluster import SlurmCluster, single_node_slurm

JOB_TIMEOUT_S = 900   # generous: two CPU cores, trainings and predictions of several jobs sharing them
TIME_LIMIT_MIN = 2    # jobs.py asks for USR2 a quarter of the limit (30 s) before it; slurmctld sends it at its
# first 30 s check within 60 s of the end: 60-90 s after the start


@pytest.fixture(scope="session")
def slurm_cluster(request, tmp_path_factory) -> Iterator[SlurmCluster]:
    """The single-node SLURM for the session: skipped where it cannot start (the reason printed), failed under CI."""
    yield from single_node_slurm(request, tmp_path_factory)


@dataclass
class Stage:
    array_id: str
    count: int
    names: str                       # the task names as the harness printed them, joined by ", "
    submitted: List[Dict[str, str]]  # scontrol's records right after the submission (the dependency is pending)


@dataclass
class Submission:
    workdir: str
    stages: List[Stage]
    stdout: str


def _submit(cluster: SlurmCluster, module: str, arguments: List[str], workdir: str, max_parallel: int,
            extra_env: Optional[Dict[str, str]] = None) -> Submission:
    """A harness CLI with --executor slurm; it returns once its arrays are queued."""
    command = [sys.executable, "-m", module, *arguments, "--workdir", workdir, "--executor", "slurm",
               "--partition", cluster.partition, "--cpus-per-job", "1", "--mem-gb", "4",
               "--max-parallel", str(max_parallel)]
    result = subprocess.run(command, env={**cluster.env, **(extra_env or {})}, capture_output=True, text=True,
                            timeout=300, cwd=os.path.dirname(workdir))
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    stages = [Stage(array_id, int(count), names, cluster.jobs(array_id))
              for count, array_id, names in re.findall(r"submitted (\d+) job\(s\) as array (\S+): (.*)",
                                                       result.stdout)]
    assert stages, result.stdout
    return Submission(workdir, stages, result.stdout)


def _task_job(stage: Stage, name_part: str) -> str:
    """SLURM's id of the task of `stage` whose name holds `name_part` (an array task: <array>_<index>); for stages
    whose task names have no ", " in them."""
    names = stage.names.split(", ")
    assert len(names) == stage.count, stage
    index = next(i for i, name in enumerate(names) if name_part in name)
    return stage.array_id if stage.count == 1 else f"{stage.array_id}_{index}"


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")


def _fold_folder(workdir: str, trainer_prefix: str) -> str:
    folders = glob.glob(os.path.join(workdir, "nnUNet_results", "*", f"{trainer_prefix}*__*", "fold_0"))
    assert len(folders) <= 1, folders
    return folders[0] if folders else os.path.join(workdir, "nnUNet_results", "not yet", trainer_prefix)


def _final_checkpoint(workdir: str, trainer_prefix: str) -> Optional[str]:
    """The checkpoint_final.pth of a training once it has finished (None before)."""
    path = os.path.join(_fold_folder(workdir, trainer_prefix), "checkpoint_final.pth")
    return path if os.path.isfile(path) else None


def _training_logs(fold: str) -> List[str]:
    return sorted(glob.glob(os.path.join(fold, "training_log_*.txt")))


def _wait_for(condition, what: str, timeout: float = JOB_TIMEOUT_S, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _first_epoch(log: str) -> int:
    return int(re.search(r"^\S+ \S+ Epoch (\d+)\s*$", open(log).read(), re.MULTILINE).group(1))


def _current_epoch(checkpoint: str) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["current_epoch"]


def _train_commands(workdir: str, trainer_prefix: str) -> List[str]:
    return [line for line in open(os.path.join(workdir, "commands.log")).read().splitlines()
            if " nnUNetv2_train " in line and f" -tr {trainer_prefix}" in line]


def _submit_time_limited_training(cluster: SlurmCluster, stroke: Submission, folder: str) -> Dict[str, str]:
    """One more training of Table 2 (MultiUnet 0.5, `ci` profile) limited to TIME_LIMIT_MIN, as the harness's job
    through jobs.run_stages: its datasets are those of the `stroke` submission, so it waits for that job (afterok)
    instead of a datasets job of its own."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("SLURM_CONF", "PATH"):
            patch.setenv(name, cluster.env[name])  # sbatch, and the harness's environment for the job
        patch.setenv("NNUNET_EXT_SAVE_EVERY", "1")  # a checkpoint every epoch for --c to continue from
        patch.chdir(folder)  # the job's working folder
        harness = Harness(stroke.workdir, TABLES[2], PROFILES["ci"], methods=["MultiUnet"], probabilities=[0.5],
                          runs=1)
        datasets, trainings = harness.job_stages()
        assert [task.name for task in datasets] == [stroke.stages[0].names]
        # nice < 0 (root): it starts first once the datasets are there (it waits longest, for its time limit)
        settings = ExecutorSettings(kind="slurm", folder=os.path.join(stroke.workdir, "jobs"), cpus_per_job=1,
                                    mem_gb=4, partition=cluster.partition, time_min=TIME_LIMIT_MIN,
                                    sbatch={"dependency": f"afterok:{stroke.stages[0].array_id}", "nice": "-100"})
        return run_stages([trainings], settings, log=lambda message: None).submitted


@pytest.fixture(scope="module")
def tables(slurm_cluster: SlurmCluster, tmp_path_factory) -> Dict:
    """Table 2 (no dropout and Gradual 0.5) and Table 6 (nnU-Net and LLSTM) of the `ci` profile, one run each,
    and the time-limited training, all submitted at once so that the two CPUs of the node stay busy."""
    stroke = _submit(slurm_cluster, "nnunet_ext.cli.reproduce",
                     ["--table", "2", "--profile", "ci", "--methods", "none", "Gradual", "--probabilities", "0.5",
                      "--runs", "1"], str(tmp_path_factory.mktemp("stroke") / "work"), max_parallel=2,
                     # a checkpoint every epoch: the requeue test interrupts one of these trainings
                     extra_env={"NNUNET_EXT_SAVE_EVERY": "1"})
    # the cap 1 with two trainings: SLURM must run them one after the other though a second CPU is there
    clot = _submit(slurm_cluster, "nnunet_ext.cli.reproduce_clot",
                   ["--table", "6", "--profile", "ci", "--models", "nnU-Net", "LLSTM", "--lesion", "reference",
                    "--runs", "1"], str(tmp_path_factory.mktemp("clot") / "work"), max_parallel=1)
    time_limited = _submit_time_limited_training(slurm_cluster, stroke, str(tmp_path_factory.mktemp("time_limit")))
    return {"stroke": stroke, "clot": clot, "time_limited": time_limited}


def test_a_failed_job_is_failed_with_its_log_and_its_later_stage_is_cancelled(slurm_cluster: SlurmCluster,
                                                                              tmp_path):
    # a source without case_centers.json: the datasets job fails within seconds, before any training
    source = tmp_path / "source"
    source.mkdir()
    (source / "dataset.json").write_text(json.dumps({"channel_names": {"0": "DWI", "1": "ADC"}}))
    submission = _submit(slurm_cluster, "nnunet_ext.cli.reproduce",
                         ["--table", "2", "--profile", "ci", "--methods", "none", "--runs", "1", "--source",
                          str(source)], str(tmp_path / "work"), max_parallel=1)
    datasets, trainings = submission.stages
    records = slurm_cluster.wait_until_finished([datasets.array_id, trainings.array_id], timeout=300)
    [failed] = records[datasets.array_id]
    assert failed["JobState"] == "FAILED" and failed["ExitCode"] != "0:0", failed
    # the job's own log says which task it ran and why it failed
    assert f"{datasets.names} on " in open(failed["StdOut"]).read()
    assert f"ValueError: {source} has no case_centers.json" in open(failed["StdErr"]).read()
    # jobs.py asks for kill-on-invalid-dep: the trainings are cancelled, not left pending for ever (squeue empties)
    assert [(r["JobState"], r["Reason"]) for r in records[trainings.array_id]] == [
        ("CANCELLED", "DependencyNeverSatisfied")]
    report = subprocess.run([sys.executable, "-m", "nnunet_ext.cli.reproduce", "--table", "2", "--profile", "ci",
                             "--methods", "none", "--runs", "1", "--source", str(source), "--workdir",
                             submission.workdir, "--report-only"], env=slurm_cluster.env, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode != 0 and "no finished run to report" in report.stderr


GRADUAL = "nnUNetTrainerGradualDrop_p05_8epochs_2it_1valit"    # the `tables` training that is requeued
MULTIUNET = "nnUNetTrainerMultiUnet_p05_8epochs_2it_1valit"    # the time-limited training (the ci profile)


def _stop_training(trainer: str) -> None:
    """SIGSTOP to the process group of the running `nnUNetv2_train ... -tr <trainer>` (run_logged starts it in its
    own session, with its data workers)."""
    groups = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            arguments = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if any(a.endswith(b"nnUNetv2_train") for a in arguments) and trainer.encode() in arguments:
                groups.add(os.getpgid(int(pid)))
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
    assert len(groups) == 1, groups
    os.killpg(groups.pop(), signal.SIGSTOP)


def _logged(workdir: str, trainer: str, line: str) -> bool:
    """Whether a training log of `trainer` has a line ending in `line` ("Epoch 3" is logged once the checkpoint of
    epoch 2 is written, with NNUNET_EXT_SAVE_EVERY=1)."""
    return any(re.search(rf"{line}\s*$", open(log).read(), re.MULTILINE)
               for log in _training_logs(_fold_folder(workdir, trainer)))


@pytest.fixture(scope="module")
def interruptions(tables: Dict, slurm_cluster: SlurmCluster) -> Dict[str, Dict[str, str]]:
    """The two interruptions, made while the jobs run, in one loop (the two trainings may come in either order):
    - the Gradual training of the `tables` array is `scontrol requeue`d at epoch 3;
    - the time-limited training is held (SIGSTOP) from epoch 2 on, as a training longer than its limit would be
      (the `ci` one lasts seconds), until SLURM's USR2 ends it (SLURM sends SIGCONT with it) and submitit requeues
      the job; its rerun then gets an hour, so that one time limit is all the test costs.
    Returns the jobs and, for the time-limited one, scontrol's record at its requeue."""
    workdir = tables["stroke"].workdir
    requeued = _task_job(tables["stroke"].stages[1], "Gradual_p05")
    [(limited_name, limited)] = tables["time_limited"].items()
    done: Dict[str, Dict[str, str]] = {}
    deadline, polled = time.time() + JOB_TIMEOUT_S, 0.0
    while len(done) < 3:
        assert time.time() < deadline, f"only {sorted(done)} within {JOB_TIMEOUT_S} s"
        if "requeue" not in done and _logged(workdir, GRADUAL, "Epoch 3"):
            slurm_cluster.command("scontrol", "requeue", requeued)
            done["requeue"] = {"job": requeued}
        if "hold" not in done and _logged(workdir, MULTIUNET, "Epoch 2"):
            _stop_training(MULTIUNET)
            done["hold"] = {"job": limited, "name": limited_name}
            # the USR2 had not come yet: the job could work first (with submitit's 90 s before a 2-minute limit,
            # slurmctld sent it at its first check after the start)
            assert slurm_cluster.jobs(limited)[0]["Restarts"] == "0"
        if "hold" in done and "time limit" not in done and time.time() - polled > 1.0:
            polled = time.time()
            [record] = slurm_cluster.jobs(limited)
            if record["Restarts"] != "0":
                slurm_cluster.command("scontrol", "update", f"JobId={limited}", "TimeLimit=60")
                done["time limit"] = record
        time.sleep(0.2)
    return done


def _check_continued(workdir: str, trainer: str, final: str) -> None:
    """The training was cut short once and its rerun continued it with --c from its checkpoint (not from epoch 0) to
    the epoch count of the uninterrupted training of the same profile."""
    first_log, resumed_log = _training_logs(os.path.dirname(final))
    resumed_at = _first_epoch(resumed_log)
    assert "Training done" not in open(first_log).read()
    # the first run finished epoch resumed_at - 1 (its checkpoint is what --c loads); it may have been cut between
    # writing that checkpoint and logging the next "Epoch N" line, so only the finished epoch is sure to be logged
    assert 0 < resumed_at and re.search(rf"Epoch {resumed_at - 1}\s*$", open(first_log).read(), re.MULTILINE)
    commands = _train_commands(workdir, trainer)
    assert len(commands) == 2 and " --c " in commands[1] + " " and " --c " not in commands[0], commands
    uninterrupted = _wait_for(lambda: _final_checkpoint(workdir, "nnUNetTrainerNoDropout"),
                              "the uninterrupted training to finish")
    assert _current_epoch(final) == _current_epoch(uninterrupted) > resumed_at


def test_a_requeued_training_continues_with_c_to_the_uninterrupted_epoch_count(tables: Dict, interruptions: Dict,
                                                                               slurm_cluster: SlurmCluster):
    workdir = tables["stroke"].workdir
    final = _wait_for(lambda: _final_checkpoint(workdir, GRADUAL), "the requeued training to finish")
    [record] = slurm_cluster.jobs(interruptions["requeue"]["job"])
    assert record["Restarts"] == "1", record
    _check_continued(workdir, GRADUAL, final)


def test_a_training_that_reaches_its_time_limit_is_requeued_and_continues_with_c(tables: Dict, interruptions: Dict,
                                                                                 slurm_cluster: SlurmCluster):
    workdir = tables["stroke"].workdir
    held, record = interruptions["hold"], interruptions["time limit"]
    try:
        assert record["TimeLimit"] == f"00:{TIME_LIMIT_MIN:02d}:00", record
        # submitit's USR2 handler took it for the time limit (not a preemption) and Task.checkpoint requeued it
        assert "this job is timed-out" in open(record["StdErr"]).read()
        assert f"{held['name']}: preempted or out of time, requeued" in open(record["StdOut"]).read()
        final = _wait_for(lambda: _final_checkpoint(workdir, MULTIUNET), "the time-limited training to finish",
                          poll=1.0)
    finally:
        # its predictions are those of any run (the `tables` jobs complete theirs): not waited for
        slurm_cluster.command("scancel", held["job"], check=False)
    _check_continued(workdir, MULTIUNET, final)


def _check_stages(cluster: SlurmCluster, submission: Submission, max_parallel: int) -> Dict[str, List[Dict]]:
    """Every stage ran to COMPLETED as an array (a plain job when it has one task) with the cap, resources and
    name asked for, after the stage before it (afterok); returns the final records per array."""
    records = cluster.wait_until_finished([s.array_id for s in submission.stages], JOB_TIMEOUT_S)
    previous_end = None
    for number, stage in enumerate(submission.stages, start=1):
        final = records[stage.array_id]
        assert len(final) == stage.count and all(r["JobState"] == "COMPLETED" for r in final), final
        for record in final:
            assert record["JobName"] == f"nnunet_ext_stage{number}"
            assert (record["Partition"], record["CPUs/Task"], record["MinMemoryNode"]) == (cluster.partition, "1",
                                                                                          "4G")
        if stage.count == 1:
            assert "ArrayJobId" not in final[0]  # a plain job, not an array of one
        else:
            assert {r["ArrayJobId"] for r in final} == {stage.array_id}
            assert sorted(int(r["ArrayTaskId"]) for r in final) == list(range(stage.count))
            assert {r["ArrayTaskThrottle"] for r in final} == {str(min(max_parallel, stage.count))}
        # right after the submission SLURM held the stage on the one before it
        dependency = stage.submitted[0]["Dependency"]
        if number == 1:
            assert dependency == "(null)"
        else:
            earlier = submission.stages[number - 2].array_id
            assert re.fullmatch(rf"afterok:{earlier}(_\*)?\(unfulfilled\)", dependency), dependency
            assert min(_time(r["StartTime"]) for r in final) >= previous_end
        previous_end = max(_time(r["EndTime"]) for r in final)
    return records


def _report(cluster: SlurmCluster, submission: Submission) -> subprocess.CompletedProcess:
    """The --report-only command the submission printed, as printed."""
    line = next(line.strip() for line in submission.stdout.splitlines() if line.strip().endswith("--report-only"))
    result = subprocess.run(shlex.split(line), env=cluster.env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{line}:\n{result.stdout}\n{result.stderr}"
    return result


def test_both_harnesses_ci_profiles_run_as_dependent_arrays_and_report(tables: Dict,
                                                                        slurm_cluster: SlurmCluster):
    stroke, clot = tables["stroke"], tables["clot"]
    assert [s.count for s in stroke.stages] == [1, 2]  # datasets, then one job per cell
    assert [s.count for s in clot.stages] == [1, 2, 1]  # preparation, one job per model, the evaluation
    _check_stages(slurm_cluster, stroke, max_parallel=2)
    clot_records = _check_stages(slurm_cluster, clot, max_parallel=1)
    first, second = sorted(clot_records[clot.stages[1].array_id], key=lambda r: _time(r["StartTime"]))
    assert _time(second["StartTime"]) >= _time(first["EndTime"])  # %1: one training at a time

    # SLURM gave each job one CPU (--cpus-per-task 1) but no binding (TaskPlugin=task/none): our trainers read
    # SLURM_CPUS_PER_TASK and start one thread, where nnUNetv2_train would start one per core of the node
    logs = glob.glob(os.path.join(stroke.workdir, "nnUNet_results", "*", "*", "fold_0", "training_log_*.txt"))
    assert logs and all(re.search(r"CPU threads: 1 \(limits: affinity \d+ CPUs?, SLURM_CPUS_PER_TASK 1\)",
                                  open(log).read()) for log in logs)

    _report(slurm_cluster, stroke)
    with open(os.path.join(stroke.workdir, "table2_ci.json")) as f:
        summaries = json.load(f)["summaries"]
    assert sorted(summaries) == ["Gradual_p05", "no_dropout"]
    assert all(summary[row]["average"]["runs"] == 1 for summary in summaries.values() for row in ("all", "missing"))
    assert os.path.isfile(os.path.join(stroke.workdir, "table2_ci.md"))

    _report(slurm_cluster, clot)
    with open(os.path.join(clot.workdir, "clot_table6_ci.json")) as f:
        rows = json.load(f)["rows"]
    assert {row["architecture"] for row in rows} == {"nnU-Net", "LLSTM"}
    assert all(row["runs_finished"] == 1 for row in rows)
    assert os.path.isfile(os.path.join(clot.workdir, "clot_table6_ci.md"))
