"""Lock files that keep two harness processes (or jobs) on one workdir from doing the same work at once.

A lock names its holder (host, pid, SLURM job). It is taken over when that process is gone (same host) or when
the taker is the same SLURM job requeued (possibly on another node); otherwise the second process stops with an
error naming the holder, rather than training, planning or predicting into the same folder.
"""
import json
import os
import socket
from contextlib import contextmanager
from typing import Dict, Iterator


@contextmanager
def run_lock(path: str) -> Iterator[None]:
    """Hold `path` as a lock file while one run trains and predicts, so that two harness processes (or two jobs)
    on one workdir never train the same run into the same folder. The lock names its holder (host, pid, SLURM
    job); it is taken over when that process is gone (same host) or when this process is the same SLURM job
    requeued (possibly on another node)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "job": scheduler_job_id()}
    for _attempt in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = _lock_owner(path)
            if not _lock_is_stale(owner, me):
                raise RuntimeError(f"{path}: this run is in progress in process {owner.get('pid')} on "
                                   f"{owner.get('host')}" + (f" (job {owner['job']})" if owner.get("job") else "") +
                                   " (another harness or job on the same workdir); wait for it, or delete the lock "
                                   "if that process is gone")
            os.remove(path)
            continue
        with os.fdopen(descriptor, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        os.remove(path)


def scheduler_job_id() -> str:
    """SLURM's id of the job this process runs in ('' outside one); a requeued job keeps it."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return os.environ.get("SLURM_JOB_ID", "")


def _lock_owner(path: str) -> Dict:
    try:
        text = open(path).read().strip()
    except OSError:
        return {}
    try:
        owner = json.loads(text or "{}")
    except ValueError:
        return {}
    return owner


def _lock_is_stale(owner: Dict, me: Dict) -> bool:
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or owner["pid"] <= 0:
        return True  # unreadable or half-written: its writer died before finishing it
    if owner.get("job") and owner["job"] == me["job"]:
        return True  # this very job, requeued after a preemption or a time limit
    if owner.get("host") != me["host"]:
        return False  # another machine's process: nothing here can tell whether it is alive
    return not _process_exists(owner["pid"])


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
