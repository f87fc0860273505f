"""How many threads a CPU training may use: the CPUs this process was given, not every core of the machine.

nnUNetv2_train on `-device cpu` calls `torch.set_num_threads(multiprocessing.cpu_count())` before it builds the
trainer. cpu_count() is the machine's core count, whatever the process was given: a SLURM job with
`--cpus-per-task 4` on a 64-core node runs 64 threads on 4 CPUs, and two local jobs on a 2-core machine run 4
threads on 2 cores. OpenMP threads that outnumber their cores wait for each other at every barrier: two tiny
CPU trainings at once on 2 cores took 32 s sharing the cores and 13 s each pinned to its own core
(benchmarks/parallel_cpu_trainings.py). Our trainers therefore reset the count to the smallest of:
- the CPUs the process may run on (its affinity: `taskset`, SLURM's task/affinity or cgroups, our local executor);
- SLURM_CPUS_PER_TASK, where SLURM set it (a job without CPU binding still sees every core);
- OMP_NUM_THREADS, where the user set it (the usual way to ask for fewer threads, which nnU-Net overrides).
"""
import os
from typing import AbstractSet, Dict, Mapping, Optional, Tuple

THREAD_LIMIT_ENV = ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS")


def cpu_thread_limits(environ: Mapping[str, str], affinity: AbstractSet[int]) -> Dict[str, int]:
    """Each limit that applies, by where it comes from ("affinity", and the variables of THREAD_LIMIT_ENV that are
    set); ValueError naming the variable when one is set to something other than a positive integer."""
    if not affinity:
        raise ValueError("the process may run on no CPU (empty affinity)")
    limits = {"affinity": len(affinity)}
    for variable in THREAD_LIMIT_ENV:
        text = environ.get(variable, "").strip()
        if not text:
            continue
        # SLURM writes plain integers; OMP_NUM_THREADS may list one count per nesting level ("4,2"): the first
        # is the one that applies to torch's intra-op pool
        first = text.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise ValueError(f"{variable} must be a positive integer, got {text!r}")
        limits[variable] = int(first)
    return limits


def cpu_threads(environ: Optional[Mapping[str, str]] = None,
                affinity: Optional[AbstractSet[int]] = None) -> Tuple[int, str]:
    """The thread count for a CPU training and a note saying what set it, e.g. (1, "affinity 1 CPU")."""
    environ = os.environ if environ is None else environ
    affinity = os.sched_getaffinity(0) if affinity is None else affinity
    limits = cpu_thread_limits(environ, affinity)
    count = min(limits.values())
    reasons = ", ".join(f"{name} {value}" if name != "affinity" else f"affinity {value} CPU" + "s" * (value > 1)
                        for name, value in limits.items())
    return count, reasons
