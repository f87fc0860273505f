"""CPU trainings use the CPUs they were given (cpu_threads.py), and parallel local jobs get disjoint CPUs."""
import pytest

from nnunet_ext.experiments.jobs import ExecutorSettings, local_cpu_blocks
from nnunet_ext.training.cpu_threads import cpu_threads

EIGHT = set(range(8))


@pytest.mark.parametrize("environ,affinity,expected", [
    ({}, EIGHT, (8, "affinity 8 CPUs")),
    ({}, {3}, (1, "affinity 1 CPU")),
    ({"SLURM_CPUS_PER_TASK": "4"}, EIGHT, (4, "affinity 8 CPUs, SLURM_CPUS_PER_TASK 4")),
    ({"SLURM_CPUS_PER_TASK": "4"}, {0, 1}, (2, "affinity 2 CPUs, SLURM_CPUS_PER_TASK 4")),
    ({"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "6"}, EIGHT,
     (3, "affinity 8 CPUs, SLURM_CPUS_PER_TASK 6, OMP_NUM_THREADS 3")),
    ({"OMP_NUM_THREADS": "2,1"}, EIGHT, (2, "affinity 8 CPUs, OMP_NUM_THREADS 2")),  # one count per nesting level
    ({"OMP_NUM_THREADS": " "}, EIGHT, (8, "affinity 8 CPUs")),                        # set but empty: not a limit
])
def test_threads_are_the_smallest_limit_that_applies(environ, affinity, expected):
    assert cpu_threads(environ, affinity) == expected


@pytest.mark.parametrize("environ,message", [
    ({"SLURM_CPUS_PER_TASK": "0"}, "SLURM_CPUS_PER_TASK must be a positive integer, got '0'"),
    ({"OMP_NUM_THREADS": "four"}, "OMP_NUM_THREADS must be a positive integer, got 'four'"),
    ({"OMP_NUM_THREADS": "-2"}, "OMP_NUM_THREADS must be a positive integer, got '-2'"),
])
def test_bad_thread_limits_are_refused_by_name(environ, message):
    with pytest.raises(ValueError, match=message):
        cpu_threads(environ, EIGHT)


@pytest.mark.parametrize("available,max_parallel,cpus_per_job,expected", [
    ([0, 1], 1, None, [None]),                          # one job at a time keeps every CPU
    ([0, 1], 2, None, [(0,), (1,)]),
    ([0, 1, 2, 3, 4], 2, None, [(0, 1), (2, 3)]),      # equal shares; CPU 4 is left idle rather than shared
    ([4, 6, 5, 7], 2, None, [(4, 5), (6, 7)]),          # the process's own CPUs, in order
    ([0, 1], 3, None, [(0,), (1,), (0,)]),              # more jobs than CPUs: one CPU each, in turn
    ([0, 1, 2, 3], 1, 2, [(0, 1)]),                     # --cpus-per-job pins a single job too
    ([0, 1, 2, 3, 4, 5], 2, 3, [(0, 1, 2), (3, 4, 5)]),
])
def test_local_parallel_jobs_get_disjoint_cpu_blocks(available, max_parallel, cpus_per_job, expected):
    assert local_cpu_blocks(available, max_parallel, cpus_per_job) == expected


def test_more_cpus_than_the_process_has_are_refused():
    with pytest.raises(ValueError, match=r"2 parallel job\(s\) x 3 CPU\(s\) need 6 CPUs, but this process may use 4 "
                                         r"\(\[0, 1, 2, 3\]\)"):
        local_cpu_blocks([0, 1, 2, 3], 2, 3)
    with pytest.raises(ValueError, match="--cpus-per-job must be >= 1, got 0"):
        ExecutorSettings(cpus_per_job=0)
    with pytest.raises(ValueError, match="need 2000 CPUs"):
        ExecutorSettings(max_parallel=2, cpus_per_job=1000)
