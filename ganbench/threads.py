"""How many CPU threads each run's torch gets, chosen from the cores and the number of runs at once.

torch's intra-op pool defaults to one thread per core, in every process. Two runs at once on a
2-core machine then ask for four threads, and with a third process busy (a test, another suite)
OpenMP's threads spin-wait for each other at every parallel region: measured on this project's
2-core CPU, a run slowed about tenfold (benchmarks/threads.py measures it). So each run gets
`cores // jobs` threads (at least one), counted from the cores this process may use
(`os.sched_getaffinity`), and a user's own OMP_NUM_THREADS, or `--threads`, wins.

OMP_WAIT_POLICY=PASSIVE makes an idle OpenMP thread sleep at once instead of spinning. It only
takes effect in a process that has not started OpenMP yet, so it is set, unless the user set it,
in the environment the run processes start from; a run inside this process (`--jobs 0`) keeps
the policy it started with.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

WAIT_POLICY = "OMP_WAIT_POLICY"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def per_run(jobs: int, requested: int | None = None, cores: int | None = None) -> tuple[int, str]:
    """Threads for each run and why: `requested` (--threads), else OMP_NUM_THREADS, else the
    usable cores shared among the `jobs` runs at once (jobs 0: one run, in this process)."""
    if requested is not None:
        return requested, "--threads"
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, jobs)), f"{cores} core(s) / {max(1, jobs)} run(s) at once"


def busy_load() -> float | None:
    """The 1-minute load average when it is 1 or more (other work shares the CPU), else None; None
    too where the system does not report it."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return None
    return load if load >= 1.0 else None


def busy_warning(threads: int, why: str, device_type: str) -> str | None:
    """A line for `ganbench run` when the CPU already has other work and each run would get more
    than one thread by ganbench's own choice (not --threads or OMP_NUM_THREADS). Read before the
    runs start, the 1-minute load average counts other processes (and runs that just ended)."""
    if device_type != "cpu" or threads <= 1 or "core(s)" not in why:
        return None
    load = busy_load()
    if load is None:
        return None
    return (f"the CPU already has other work (1-minute load average {load:.1f} on {usable_cores()} usable "
            f"core(s)): {threads} threads per run beside it can be many times slower than one (measured "
            f"up to 20x on a shared 2-core CPU; docs/suites.md, Threads per run). --threads 1 avoids it")


def estimate_warning(device_type: str) -> str | None:
    """A line for `ganbench estimate` when the CPU it measures on already has other work: it times
    the steps in its own process, at torch's thread count, so a busy CPU can make them several
    times too slow (measured: 1.29 s a step once, 0.054-0.058 in two reruns minutes later)."""
    load = busy_load() if device_type == "cpu" else None
    if load is None:
        return None
    return (f"the CPU already has other work (1-minute load average {load:.1f} on {usable_cores()} usable core(s)): "
            f"the steps timed here at {torch.get_num_threads()} thread(s) can be several times slower than on a quiet "
            "CPU; estimate again when it is quiet, or with OMP_NUM_THREADS=1 to time one thread")


def apply(threads: int) -> None:
    """Give this process's torch `threads` intra-op threads."""
    torch.set_num_threads(threads)


def passive_wait() -> bool:
    """Ask OpenMP threads in processes started from now on to sleep when idle; False when the
    user chose a policy of their own."""
    if os.environ.get(WAIT_POLICY):
        return False
    os.environ[WAIT_POLICY] = "PASSIVE"
    return True


@dataclass(frozen=True)
class Choice:
    threads: int  # torch intra-op threads each run gets
    why: str
    passive: bool  # OMP_WAIT_POLICY=PASSIVE was set for the run processes


@contextlib.contextmanager
def chosen(jobs: int, requested: int | None = None) -> Iterator[Choice]:
    """For the length of a `ganbench run`: this process's torch gets the per-run count too (so a run
    in this process, --jobs 0, uses it, and the device line names it), the run processes start with
    the passive wait policy; both are put back afterwards."""
    threads, why = per_run(jobs, requested)
    before, policy = torch.get_num_threads(), os.environ.get(WAIT_POLICY)
    passive = passive_wait()
    apply(threads)
    try:
        yield Choice(threads, why, passive)
    finally:
        torch.set_num_threads(before)
        if passive:
            if policy is None:
                os.environ.pop(WAIT_POLICY, None)
            else:
                os.environ[WAIT_POLICY] = policy
