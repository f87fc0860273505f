"""What every experiment harness writes: the command log, one log per command, and the table files."""
import csv
import io
import json
import os
import shlex
import signal
import subprocess
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

from nnunet_ext.data.staging import write_files_together


def append_command_log(workdir: str, text: str) -> None:
    """One timestamped line in <workdir>/commands.log (the record of what a harness ran, in order)."""
    with open(os.path.join(workdir, "commands.log"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def is_job_resource_variable(name: str) -> bool:
    """Whether an environment variable says what this process was given to run on (SLURM's job variables, the GPUs
    SLURM or the local executor assigned), rather than how the harness was configured."""
    return name.startswith("SLURM_") or name == "CUDA_VISIBLE_DEVICES"


def job_environment(env: Mapping[str, str], current: Mapping[str, str]) -> Dict[str, str]:
    """`env` (the harness's environment, fixed where it was submitted and pickled with the job) with its resource
    variables replaced by those of `current` (the job's process): without this the commands of a job ran with the
    submitting shell's GPUs and without SLURM_CPUS_PER_TASK (cpu_threads.py)."""
    kept = {name: value for name, value in env.items() if not is_job_resource_variable(name)}
    return {**kept, **{name: value for name, value in current.items() if is_job_resource_variable(name)}}


def run_logged(command: List[str], workdir: str, log_name: str, env: Mapping[str, str],
               extra_env: Optional[Mapping[str, str]] = None,
               on_output: Optional[Callable[[str], None]] = None) -> None:
    """Run `command` with `env` (+ `extra_env`) and this process's job resources (`job_environment`), its output to
    <workdir>/logs/<log_name>.log (and, line by line, to `on_output` if given); a failure names the command and
    its log."""
    append_command_log(workdir, shlex.join(command) + (f" [env {dict(extra_env)}]" if extra_env else ""))
    log_path = os.path.join(workdir, "logs", f"{log_name}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w") as log:
        # its own process group, so that an interrupted harness (Ctrl-C, a job preempted and requeued) stops the
        # command together with its workers (nnU-Net's augmentation processes) instead of leaving them training
        process = subprocess.Popen(command, env={**job_environment(env, os.environ), **(extra_env or {})},
                                   stdout=log if on_output is None else subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True, text=on_output is not None)
        try:
            if on_output is not None:
                for line in process.stdout:
                    log.write(line)
                    on_output(line)
            code = process.wait()
        finally:
            if process.poll() is None:
                stop_process_group(process)
    if code != 0:
        raise RuntimeError(f"{shlex.join(command)} failed with exit code {code}; see {log_path}")


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 10.0) -> None:
    """SIGTERM to the process group of `process` (started with start_new_session), SIGKILL after the grace."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def figure_png(figure) -> bytes:
    """A matplotlib figure as PNG bytes (closed after), to be written with the files it illustrates."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(figure)
    return buffer.getvalue()


def csv_text(rows: Sequence[Mapping]) -> str:
    """`rows` as CSV, the columns from the first row (CRLF line ends, as the csv module writes them)."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_table_files(out_prefix: str, markdown_lines: Sequence[str], csv_rows: Optional[Sequence[Mapping]],
                      json_content: Mapping, figures: Optional[Mapping[str, bytes]] = None) -> Dict[str, str]:
    """<out_prefix>.md, .csv (none when csv_rows is None), .json and each figure ({suffix: PNG bytes}), written
    together: on any error (a full disk, a folder in the way) every file keeps its old content, so a report never
    describes other files than those beside it. Returns {suffix: path}."""
    contents: Dict[str, Union[str, bytes]] = {"md": "\n".join(markdown_lines)}
    if csv_rows is not None:
        contents["csv"] = csv_text(csv_rows)
    contents["json"] = json.dumps(json_content, indent=2)
    contents.update(figures or {})
    paths = {suffix: f"{out_prefix}.{suffix}" for suffix in contents}
    write_files_together({paths[suffix]: content for suffix, content in contents.items()})
    return paths
