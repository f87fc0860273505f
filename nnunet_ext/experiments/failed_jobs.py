"""Jobs that failed, remembered in the harness's workdir until they succeed: what `--report-only` says besides the
missing (row, run) pairs.

A SLURM array's failures reach no waiting process, and a local run's output scrolls away, so a task that raises
writes `<workdir>/jobs/failed/<task>.json` (its error's first line, its job log, the time) and a later success of
the same task removes it.
"""
import json
import os
import re
import time
from typing import Dict, List, Optional, Sequence

from nnunet_ext.data.staging import write_files_together

FAILED_JOBS_FOLDER = os.path.join("jobs", "failed")  # in the harness's workdir: one record per failed task


def _failed_job_path(workdir: str, task_name: str) -> str:
    return os.path.join(workdir, FAILED_JOBS_FOLDER, re.sub(r"[^A-Za-z0-9.+-]+", "_", task_name) + ".json")


def record_failed_job(workdir: str, task_name: str, error: str, log: Optional[str]) -> None:
    """Remember that the task failed (until a later run of it succeeds), so that a `--report-only`, in another
    process and perhaps days later, can say which work failed and where its log is; a SLURM array's failures
    reach no waiting process otherwise."""
    record = {"task": task_name, "error": error.strip().splitlines()[0] if error.strip() else "", "log": log,
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_files_together({_failed_job_path(workdir, task_name): json.dumps(record, indent=2)})


def clear_failed_job(workdir: str, task_name: str) -> None:
    path = _failed_job_path(workdir, task_name)
    if os.path.isfile(path):
        os.remove(path)


def failed_jobs(workdir: str) -> List[Dict[str, Optional[str]]]:
    """The recorded failures of tasks that have not succeeded since, oldest first."""
    folder = os.path.join(workdir, FAILED_JOBS_FOLDER)
    if not os.path.isdir(folder):
        return []
    records = []
    for name in os.listdir(folder):
        if name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                records.append(json.load(f))
    return sorted(records, key=lambda record: (record["time"], record["task"]))


def failed_job_lines(workdir: str) -> List[str]:
    """One line per recorded failure, for a report's output."""
    return [f"{r['task']} failed at {r['time']}: {r['error']}" + (f" (log {r['log']})" if r["log"] else "")
            for r in failed_jobs(workdir)]


def unfinished_lines(missing: Sequence[str], workdir: str) -> List[str]:
    """What a report's output says about the work it does not hold: the missing (row, run) pairs, and the jobs
    that failed and have not succeeded since, each with its log."""
    lines = []
    if missing:
        lines.append(f"still missing ({len(missing)}):")
        lines += [f"  {item}" for item in missing]
    failures = failed_job_lines(workdir)
    if failures:
        lines.append("failed jobs (not succeeded since):")
        lines += [f"  {line}" for line in failures]
    return lines
