"""A real single-node SLURM for the tests of `--executor slurm` (tests/test_slurm_real.py), started and stopped with
.ci/slurm.sh. Only the tests that ask for that module's `slurm_cluster` fixture need it; nothing else imports this.

Where it cannot start (not root, no SLURM/munge and no apt-get to install them, a daemon that does not come up)
those tests are skipped with the reason printed, except under CI (environment variable CI set, e.g. CI=true),
where that is a failure: a CI machine must test the cluster path. A cluster already started by
`.ci/slurm.sh start` (its SLURM_CONF exported) is used as it is and left running.
"""
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPOSITORY, ".ci", "slurm.sh")
CONF_HEADER = "# single-node SLURM written by .ci/slurm.sh"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}
INSTALL_TIMEOUT_S = 900
START_TIMEOUT_S = 120


class SlurmUnavailable(Exception):
    """Why the single-node cluster cannot run on this machine."""


@dataclass
class SlurmCluster:
    conf: str
    partition: str
    env: Dict[str, str]  # os.environ with SLURM_CONF, and the interpreter's bin folder first on PATH
    started_here: bool

    def command(self, *arguments: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(list(arguments), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(arguments)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def jobs(self, job_id: str) -> List[Dict[str, str]]:
        """`scontrol show job -o` of a job or array, one dict per record (an array: one per task once they have
        started, a pending rest as one record with ArrayTaskId=<range>)."""
        lines = self.command("scontrol", "show", "job", "-o", job_id).stdout.splitlines()
        return [parse_record(line) for line in lines if line.strip()]

    def wait_until_finished(self, job_ids: Sequence[str], timeout: float, poll: float = 2.0
                            ) -> Dict[str, List[Dict[str, str]]]:
        """Poll scontrol until every task of `job_ids` is in a final state; {job id: its records}. A timeout names
        what is still pending or running."""
        deadline = time.time() + timeout
        while True:
            records = {job_id: self.jobs(job_id) for job_id in job_ids}
            unfinished = [f"{r['JobId']} ({r.get('ArrayJobId', '')}_{r.get('ArrayTaskId', '')}) {r['JobState']} "
                          f"{r.get('Reason', '')}" for rs in records.values() for r in rs
                          if r["JobState"] not in FINAL_STATES]
            if not unfinished:
                return records
            if time.time() > deadline:
                raise AssertionError(f"jobs not finished after {timeout:.0f} s: {unfinished}\n"
                                     + self.command("squeue", check=False).stdout)
            time.sleep(poll)


def parse_record(line: str) -> Dict[str, str]:
    """'JobId=5 JobName=x ... StdErr=/a/b' -> {'JobId': '5', ...} (values of the fields used here have no spaces)."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z_/:][\w/:]*)=(\S*)", line))


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _environment(conf: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["SLURM_CONF"] = conf
    # the jobs run this interpreter (submitit uses sys.executable) and the nnU-Net commands installed beside it
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _script(command: str, folder: Optional[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if folder is not None:
        env["NNUNET_EXT_SLURM_DIR"] = folder
    try:
        return subprocess.run(["bash", SCRIPT, command], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise SlurmUnavailable(f"'bash .ci/slurm.sh {command}' took more than {timeout:.0f} s") from error


def _shortened(text: str, tail: int = 2000) -> str:
    """The first line (the script's own message) and the end of a long output (the daemons' logs)."""
    text = text.strip()
    if len(text) <= tail + 200:
        return text
    return text.splitlines()[0] + "\n[...]\n" + text[-tail:]


def _default_partition(env: Dict[str, str]) -> str:
    result = subprocess.run(["sinfo", "-h", "-o", "%P"], env=env, capture_output=True, text=True, timeout=30)
    partitions = result.stdout.split()
    default = [p.rstrip("*") for p in partitions if p.endswith("*")]
    if result.returncode != 0 or not partitions:
        raise SlurmUnavailable(f"sinfo does not answer: {result.stderr.strip()}")
    return (default or partitions)[0].rstrip("*")


def running_cluster() -> Optional[SlurmCluster]:
    """The cluster of an exported SLURM_CONF written by .ci/slurm.sh, if it answers."""
    conf = os.environ.get("SLURM_CONF", "")
    if not os.path.isfile(conf) or not shutil.which("sinfo"):
        return None
    with open(conf) as f:
        if f.readline().strip() != CONF_HEADER:
            return None  # a site's cluster: the tests need this machine's single node (shared temporary folders)
    env = _environment(conf)
    try:
        return SlurmCluster(conf, _default_partition(env), env, started_here=False)
    except (SlurmUnavailable, subprocess.TimeoutExpired):
        return None


def start_cluster(folder: str) -> SlurmCluster:
    """.ci/slurm.sh install (where something is missing) and start, everything in `folder`."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("the single-node SLURM runs its daemons as root; these tests are not run as root")
    if not all(shutil.which(p) for p in ("munged", "slurmctld", "slurmd", "sbatch")):
        if not shutil.which("apt-get"):
            raise SlurmUnavailable("SLURM or munge is not installed and there is no apt-get to install them")
        installed = _script("install", None, INSTALL_TIMEOUT_S)
        if installed.returncode != 0:
            raise SlurmUnavailable(f"'bash .ci/slurm.sh install' failed:\n"
                                   f"{_shortened(installed.stdout + installed.stderr)}")
    started = _script("start", folder, START_TIMEOUT_S)
    if started.returncode != 0:
        raise SlurmUnavailable(f"'bash .ci/slurm.sh start' failed:\n{_shortened(started.stderr)}")
    match = re.search(r"^export SLURM_CONF=(\S+)$", started.stdout, re.MULTILINE)
    if match is None:
        _script("stop", folder, 60)
        raise SlurmUnavailable(f"'bash .ci/slurm.sh start' printed no SLURM_CONF:\n{started.stdout}")
    env = _environment(match.group(1))
    return SlurmCluster(match.group(1), _default_partition(env), env, started_here=True)


def single_node_slurm(request, tmp_path_factory) -> Iterator[SlurmCluster]:
    """The body of a session fixture (`yield from single_node_slurm(request, tmp_path_factory)`): the running
    cluster of an exported SLURM_CONF, or one started here and stopped afterwards; a skip with the reason printed
    where none can start, a failure instead under CI."""
    cluster = running_cluster()
    folder = None
    if cluster is None:
        # munged's socket lives there: a unix socket path has at most about 100 characters, pytest's are shorter
        folder = str(tmp_path_factory.mktemp("slurm", numbered=True))
        try:
            cluster = start_cluster(folder)
        except SlurmUnavailable as error:
            reason = f"no single-node SLURM on this machine: {error}"
            if _ci():
                pytest.fail(f"{reason} (CI is set: the cluster path must be tested)", pytrace=False)
            # printed past pytest's output capture, so that the reason shows without -rs
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            capture = request.config.pluginmanager.get_plugin("capturemanager")
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(f"\n[slurm_cluster] skipping the real-SLURM tests: {reason}")
            pytest.skip(reason)
    try:
        yield cluster
    finally:
        if cluster.started_here:
            stopped = _script("stop", folder, 120)
            assert stopped.returncode == 0, f"'bash .ci/slurm.sh stop' failed: {stopped.stderr}"
