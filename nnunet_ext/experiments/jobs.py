"""Where a harness's work runs: submitit jobs on this machine (`local`) or on a SLURM cluster (`slurm`).

A harness describes its work as stages of independent tasks (`Task`): preparation (datasets, plans), then one
task per (cell, run) training (with the prediction and evaluation that follow it, or before a last stage that
evaluates each run). Stage k starts when stage k-1 has ended:
- local: submitit's LocalExecutor, at most `max_parallel` jobs at once, each with its own GPUs when asked and, when
  several run at once, its own CPUs (`local_cpu_blocks`); this process waits for every job and says which failed
  and where their logs are.
- slurm: one sbatch job array per stage, `--array=0-(n-1)%max_parallel`, each array depending on the previous
  one (afterok); this process submits and returns: a later `--report-only` (or a rerun, which skips what has
  finished) collects the results.
Requeue: every task is checkpointable. On preemption or a time limit submitit signals the job (USR2), the task is
requeued as it was, the command it was running is stopped with its workers, and the rerun finds the training's
checkpoint_latest.pth and continues with `nnUNetv2_train ... --c` (the harnesses resume that way already).
"""
import os
import re
import shlex
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import submitit

from nnunet_ext.experiments.failed_jobs import clear_failed_job, record_failed_job

EXECUTORS = ("local", "slurm")
LOCAL_TIME_LIMIT_MIN = 30 * 24 * 60  # local jobs have no scheduler limit; submitit's default (2 min) would stop them
MAX_REQUEUES_ON_TIME_LIMIT = 10      # preemptions do not count (submitit); time limits do
SIGNAL_DELAY_S = 90                  # submitit's default: USR2 this long before a SLURM job's time limit
POLL_SECONDS = 2.0
PROGRESS_SECONDS = 60.0  # a progress line per running job at most this often (when it has changed)


@dataclass(frozen=True)
class ExecutorSettings:
    """How jobs are run; `sbatch` holds extra `#SBATCH` parameters (name -> value, e.g. {"account": "lab"})."""
    kind: str = "local"
    folder: str = "jobs"
    max_parallel: int = 1
    gpus_per_job: int = 0
    cpus_per_job: Optional[int] = None
    mem_gb: Optional[int] = None
    partition: Optional[str] = None
    time_min: Optional[int] = None
    local_gpus: Tuple[int, ...] = ()
    sbatch: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ValueError(f"unknown executor {self.kind!r}; expected one of {', '.join(EXECUTORS)}")
        if self.max_parallel < 1:
            raise ValueError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        if self.gpus_per_job < 0:
            raise ValueError(f"--gpus-per-job must be >= 0, got {self.gpus_per_job}")
        if self.cpus_per_job is not None and self.cpus_per_job < 1:
            raise ValueError(f"--cpus-per-job must be >= 1, got {self.cpus_per_job}")
        if self.kind == "local":  # more CPUs than this process may use: refused before any job starts
            local_cpu_blocks(sorted(os.sched_getaffinity(0)), self.max_parallel, self.cpus_per_job)
        if self.kind == "local" and self.gpus_per_job and self.local_gpus:
            needed = self.max_parallel * self.gpus_per_job
            if len(self.local_gpus) < needed:
                raise ValueError(f"{self.max_parallel} parallel jobs x {self.gpus_per_job} GPU(s) need {needed} GPUs, "
                                 f"but only {list(self.local_gpus)} are given (--local-gpus)")
        if self.kind == "local" and (self.partition or self.sbatch):
            raise ValueError("--partition and --sbatch are SLURM parameters: use them with --executor slurm")


def parse_sbatch_parameters(texts: Sequence[str]) -> Dict[str, str]:
    """['account=lab', 'qos=high'] -> {'account': 'lab', 'qos': 'high'}; a text without '=' is an error."""
    parameters = {}
    for text in texts:
        name, separator, value = text.partition("=")
        if not separator or not name.strip().lstrip("-"):
            raise ValueError(f"--sbatch takes NAME=VALUE (as in '#SBATCH --NAME=VALUE'), got {text!r}")
        parameters[name.strip().lstrip("-")] = value
    return parameters


class Task(submitit.helpers.Checkpointable):
    """One job: `getattr(target, method)(*args)` in the job's process. `target` (a harness) is pickled with the
    task, so the job works on the same workdir, profile and environment as the process that submitted it.
    Checkpointable with submitit's default: on preemption or a time limit the same call is requeued, and the
    harness resumes the interrupted training with --c."""

    # set by the local executor: the CPUs of the job's slot. A class default, so that a task pickled by an earlier
    # version (a job queued, or requeued, across an upgrade) reads None
    cpus: Optional[Tuple[int, ...]] = None

    def __init__(self, name: str, target: Any, method: str, *args: Any):
        self.name, self.target, self.method, self.args = name, target, method, args

    def __call__(self) -> Any:
        cpus = self.cpus
        where = f"{socket.gethostname()} (pid {os.getpid()}" + (f", CPUs {list(cpus)})" if cpus else ")")
        print(f"[{time.strftime('%H:%M:%S')}] {self.name} on {where}", flush=True)
        if cpus:
            # inherited by the commands the task runs; our trainers size their thread pool by it (cpu_threads.py)
            os.sched_setaffinity(0, cpus)
        workdir = getattr(self.target, "workdir", None)
        try:
            result = getattr(self.target, self.method)(*self.args)
        except Exception as error:
            if workdir:
                try:
                    record_failed_job(workdir, self.name, f"{type(error).__name__}: {error}", _job_log())
                except OSError as record_error:  # e.g. the full disk that failed the task: report the task's error
                    print(f"could not record the failure in {workdir}: {record_error}", flush=True)
            raise
        if workdir:
            clear_failed_job(workdir, self.name)
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        print(f"[{time.strftime('%H:%M:%S')}] {self.name}: preempted or out of time, requeued; its training "
              "continues with --c", flush=True)
        return super().checkpoint(*args, **kwargs)


def _job_log() -> Optional[str]:
    """The log of the submitit job this process runs (None outside one)."""
    try:
        return str(submitit.JobEnvironment().paths.stdout)
    except (KeyError, RuntimeError):   # no SUBMITIT_FOLDER / job id: not a submitit job
        return None


@dataclass
class StagesOutcome:
    """What became of the stages: `failed` (task name -> message and log) on a local executor, `submitted`
    (task name -> SLURM job id) on a cluster."""
    failed: Dict[str, str] = field(default_factory=dict)
    submitted: Dict[str, str] = field(default_factory=dict)
    skipped_stages: int = 0

    def failure_lines(self) -> str:
        """One indented line per failed job (empty when none failed), for an error message."""
        return "".join(f"\n  {name} failed: {message}" for name, message in self.failed.items())


def make_executor(settings: ExecutorSettings) -> submitit.Executor:
    os.makedirs(settings.folder, exist_ok=True)
    if settings.kind == "local":
        executor = submitit.LocalExecutor(folder=os.path.join(settings.folder, "%j"),
                                          max_num_timeout=MAX_REQUEUES_ON_TIME_LIMIT)
        executor.update_parameters(timeout_min=settings.time_min or LOCAL_TIME_LIMIT_MIN)
        return executor
    executor = submitit.SlurmExecutor(folder=os.path.join(settings.folder, "%j"),
                                      max_num_timeout=MAX_REQUEUES_ON_TIME_LIMIT)
    time_min = settings.time_min or 24 * 60
    # USR2 (checkpoint and requeue) is asked for SIGNAL_DELAY_S before the limit, at most a quarter of it: slurmctld
    # sends it at its first 30 s check within delay + 30 s of the end, so with submitit's 90 s every start of a job
    # limited to 1 or 2 minutes was signalled at once, before any work, until MAX_REQUEUES_ON_TIME_LIMIT ran out
    parameters: Dict[str, Any] = {"time": time_min, "signal_delay_s": min(SIGNAL_DELAY_S, time_min * 15),
                                  "array_parallelism": settings.max_parallel,
                                  "additional_parameters": dict(settings.sbatch)}
    if settings.partition:
        parameters["partition"] = settings.partition
    if settings.gpus_per_job:
        parameters["gpus_per_node"] = settings.gpus_per_job
    if settings.cpus_per_job:
        parameters["cpus_per_task"] = settings.cpus_per_job
    if settings.mem_gb:
        parameters["mem"] = f"{settings.mem_gb}GB"
    executor.update_parameters(**parameters)
    return executor


def _print(message: str) -> None:
    print(message, flush=True)


def run_stages(stages: Sequence[Sequence[Task]], settings: ExecutorSettings, log=_print) -> StagesOutcome:
    """Run the stages in order, each stage's tasks as parallel jobs (see the module docstring)."""
    executor = make_executor(settings)
    stages = [list(s) for s in stages if s]
    if settings.kind == "slurm":
        return _submit_to_slurm(executor, stages, settings, log)
    outcome = StagesOutcome()
    for number, stage in enumerate(stages):
        failed = _run_locally(executor, stage, settings, log)
        outcome.failed.update(failed)
        if failed and number + 1 < len(stages):
            outcome.skipped_stages = len(stages) - number - 1
            log(f"{len(failed)} job(s) failed: the {outcome.skipped_stages} later stage(s) were not started")
            break
    return outcome


def _local_gpus(settings: ExecutorSettings, slot: int) -> Optional[List[int]]:
    """The GPUs of parallel slot `slot`: disjoint blocks of --local-gpus (default 0..max_parallel*gpus-1)."""
    if not settings.gpus_per_job:
        return None
    pool = list(settings.local_gpus) or list(range(settings.max_parallel * settings.gpus_per_job))
    return pool[slot * settings.gpus_per_job:(slot + 1) * settings.gpus_per_job]


def local_cpu_blocks(available: Sequence[int], max_parallel: int,
                     cpus_per_job: Optional[int] = None) -> List[Optional[Tuple[int, ...]]]:
    """The CPUs of each parallel slot of the local executor (None: the job keeps every CPU of this process).

    Jobs that share cores each start as many threads as there are cores (nnU-Net's CPU training does), and threads
    that outnumber their cores wait for each other: two trainings on two cores took 2.5x as long sharing them as
    pinned to one each (benchmarks/parallel_cpu_trainings.py). So parallel slots get disjoint blocks, `cpus_per_job`
    CPUs each or an equal share; with more slots than CPUs, slots take one CPU each in turn. One slot without
    `cpus_per_job` is left alone."""
    available = sorted(available)
    if cpus_per_job is not None:
        if max_parallel * cpus_per_job > len(available):
            raise ValueError(f"{max_parallel} parallel job(s) x {cpus_per_job} CPU(s) need {max_parallel * cpus_per_job}"
                             f" CPUs, but this process may use {len(available)} ({available})")
        size = cpus_per_job
    elif max_parallel == 1:
        return [None]
    elif max_parallel > len(available):
        return [(available[slot % len(available)],) for slot in range(max_parallel)]
    else:
        size = len(available) // max_parallel
    return [tuple(available[slot * size:(slot + 1) * size]) for slot in range(max_parallel)]


def _run_locally(executor: submitit.LocalExecutor, tasks: List[Task], settings: ExecutorSettings,
                 log) -> Dict[str, str]:
    """At most max_parallel jobs at once; a finished one frees its slot (its GPUs and CPUs) for the next task."""
    # a stage of one task (the datasets) keeps every CPU, unless --cpus-per-job says otherwise
    cpu_blocks = local_cpu_blocks(sorted(os.sched_getaffinity(0)), max(1, min(settings.max_parallel, len(tasks))),
                                  settings.cpus_per_job)
    waiting = list(tasks)
    running: Dict[int, Tuple[Task, submitit.Job]] = {}
    failed: Dict[str, str] = {}
    shown: Dict[str, str] = {}
    next_progress = time.time() + PROGRESS_SECONDS
    while waiting or running:
        for slot in range(len(cpu_blocks)):
            if slot in running or not waiting:
                continue
            task = waiting.pop(0)
            task.cpus = cpu_blocks[slot]
            gpus = _local_gpus(settings, slot)
            if gpus is not None:
                executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
            job = executor.submit(task)
            running[slot] = (task, job)
            log(f"started {task.name} (local job {job.job_id}" + (f", GPUs {gpus}" if gpus else "") +
                (f", CPUs {list(task.cpus)}" if task.cpus else "") + f"; log {job.paths.stdout})")
        for slot, (task, job) in list(running.items()):
            if not job.done():
                continue
            del running[slot]
            error = job.exception()
            if error is None:
                log(f"finished {task.name}")
            else:
                failed[task.name] = f"{_last_error_line(error)} (log {job.paths.stdout}, {job.paths.stderr})"
                log(f"FAILED {task.name}: {failed[task.name]}")
        if running and time.time() >= next_progress:
            _log_progress([task for task, _ in running.values()], shown, log)
            next_progress = time.time() + PROGRESS_SECONDS
        time.sleep(POLL_SECONDS if running else 0)
    return failed


def task_progress(task: Task) -> Optional[str]:
    """What a running task's target says of its progress (`target.progress_line(method, *args)`, e.g. a harness
    reading nnU-Net's training log), or None; a target without it, or one that fails to say, gives None."""
    describe = getattr(task.target, "progress_line", None)
    if describe is None:
        return None
    try:
        return describe(task.method, *task.args)
    except Exception:  # a progress line must never stop the jobs it describes
        return None


def _log_progress(tasks: Sequence[Task], shown: Dict[str, str], log) -> None:
    """One line per running task whose progress changed since it was last shown."""
    for task in tasks:
        line = task_progress(task)
        if line and shown.get(task.name) != line:
            shown[task.name] = line
            log(f"  {task.name}: {line}")


def _last_error_line(error: Exception) -> str:
    """The exception line of a failed job: submitit's FailedJobError holds the job's traceback between two rules
    of dashes, followed by the paths of the logs."""
    text = str(error)
    parts = re.split(r"\n-{10,}\n", text)
    trace = parts[1] if len(parts) >= 3 else text
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _submit_to_slurm(executor: submitit.SlurmExecutor, stages: List[List[Task]], settings: ExecutorSettings,
                     log) -> StagesOutcome:
    outcome = StagesOutcome()
    previous: List[str] = []
    for number, stage in enumerate(stages, start=1):
        # afterok on an array id waits for every task of the array (requeued ones included); when a task of the
        # previous stage fails, SLURM cancels this stage (kill-on-invalid-dep) instead of leaving it pending for
        # ever (DependencyNeverSatisfied), so that squeue empties; an --sbatch kill-on-invalid-dep=no wins
        executor.update_parameters(job_name=f"nnunet_ext_stage{number}",
                                   dependency="afterok:" + ":".join(dict.fromkeys(j.split("_")[0] for j in previous))
                                   if previous else None,
                                   additional_parameters={"kill-on-invalid-dep": "yes", **settings.sbatch}
                                   if previous else dict(settings.sbatch))
        with executor.batch():
            jobs = [executor.submit(task) for task in stage]
        for task, job in zip(stage, jobs):
            outcome.submitted[task.name] = job.job_id
        previous = [job.job_id for job in jobs]
        log(f"submitted {len(stage)} job(s) as array {previous[0].split('_')[0]}: "
            + ", ".join(task.name for task in stage))
    return outcome


def report_outcome(outcome: StagesOutcome, report_command: str, log=_print) -> None:
    """After a SLURM submission: what the user does next."""
    if outcome.submitted:
        log(f"{len(outcome.submitted)} SLURM job(s) submitted; when they have finished (squeue -u $USER), write "
            f"the tables with:\n  {report_command}")


def report_command(argv: Sequence[str], program: str) -> str:
    """The harness's command line with --report-only and without executor options."""
    executor_options = {"--executor", "--max-parallel", "--gpus-per-job", "--cpus-per-job", "--mem-gb", "--partition",
                        "--time-min", "--local-gpus", "--sbatch"}
    kept: List[str] = []
    skipping = False
    for argument in argv:
        if argument.startswith("--"):
            skipping = argument.split("=")[0] in executor_options
        if not skipping:
            kept.append(argument)
    if "--report-only" not in kept:
        kept.append("--report-only")
    return shlex.join([program, *kept])


def add_executor_arguments(parser) -> None:
    """The executor options shared by nnunet_ext_reproduce and nnunet_ext_reproduce_clot."""
    group = parser.add_argument_group("where the trainings run (submitit)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: jobs on this machine (default, one at a time); slurm: job arrays on a SLURM "
                            "cluster, submitted and left to run (collect with --report-only)")
    group.add_argument("--max-parallel", type=int, default=1, metavar="N",
                       help="jobs running at once (local), or the job array's cap (%%N, slurm)")
    group.add_argument("--gpus-per-job", type=int, default=0, metavar="G")
    group.add_argument("--cpus-per-job", type=int, default=None, metavar="C",
                       help="slurm: --cpus-per-task; local: the CPUs each job is pinned to (default: an equal "
                            "share when --max-parallel > 1)")
    group.add_argument("--mem-gb", type=int, default=None, help="slurm: --mem")
    group.add_argument("--partition", default=None, help="slurm: --partition")
    group.add_argument("--time-min", type=int, default=None,
                       help="time limit per job in minutes (slurm default 1440; a job that reaches it is requeued "
                            "and continues with --c)")
    group.add_argument("--local-gpus", type=int, nargs="+", default=(), metavar="ID",
                       help="local: GPU ids to share out, --gpus-per-job per running job (default 0, 1, ...)")
    group.add_argument("--sbatch", nargs="+", default=(), metavar="NAME=VALUE",
                       help="slurm: extra #SBATCH parameters, e.g. account=lab qos=high")


def executor_settings_from_args(args, workdir: str) -> ExecutorSettings:
    return ExecutorSettings(kind=args.executor, folder=os.path.join(os.path.abspath(workdir), "jobs"),
                            max_parallel=args.max_parallel, gpus_per_job=args.gpus_per_job,
                            cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb, partition=args.partition,
                            time_min=args.time_min, local_gpus=tuple(args.local_gpus),
                            sbatch=parse_sbatch_parameters(args.sbatch))


