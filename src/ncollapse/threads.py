"""How many CPU threads a run uses: a policy that holds up when the cores are shared.

PyTorch's CPU kernels split each operation over a pool of OpenMP threads, one per core by
default, and every thread must finish before the operation returns. When another process keeps
one of those cores busy, each operation waits for the thread that the operating system has
descheduled: on a 2-core machine with one core busy, the embedded digits trained at about 90
images/s with torch's default of 2 threads and at about 6,000 images/s with 1 thread. So:

- :func:`choose_threads` (``run.threads: null``, the default) gives a run the cores it may use
  (CPU affinity and a cgroup quota) that are *not busy* when it starts: the load is sampled
  from ``/proc/stat`` over a quarter of a second, and a core more than :data:`BUSY_SHARE` used
  by other processes counts as busy (this process's own time, and time of processes running at
  a lower priority, ``nice`` > 0, do not count). The threads held by other ncollapse runs of
  the same user that are using the CPU count as busy too, and runs choose one after another
  (a lock file), so that two runs started at the same moment do not both take every core.
  At least 1, at most torch's own default.
  ``OMP_NUM_THREADS`` in the environment, or ``run.threads: N``, is used as given.
- :func:`quiet_openmp` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the environment sets a wait
  policy already): an OpenMP thread that waits for its peers then sleeps instead of spinning on
  a core another process needs. It must run before ``torch`` is imported (the OpenMP runtime
  reads it once, when it loads), so the command line calls it first thing; from Python, set
  the variable yourself before ``import torch``.

See ``docs/threads.md`` for the measurements behind this policy.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ThreadChoice",
    "busy_cores",
    "choose_threads",
    "quiet_openmp",
    "release_claim",
    "set_threads",
    "usable_cores",
]

#: environment variables that, when set, mean the user chose the OpenMP behaviour themselves
WAIT_POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: environment variables that, when set, fix torch's thread count (torch reads them at start)
THREAD_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: how long :func:`busy_cores` samples the machine, in seconds
SAMPLE_SECONDS = 0.25
#: a core whose other processes use more than this share of it counts as busy: a thread that
#: shares a core waits for it at every operation, which costs far more than a thread left out
BUSY_SHARE = 0.3

_TORCH_DEFAULT: int | None = None  # torch's thread count before this module changed it
_CLAIM: Path | None = None  # this process's claim file, once it has one


def quiet_openmp(environ: dict[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless a wait policy is set already; True if it was set.

    Has an effect only before the OpenMP runtime is loaded (before ``import torch``).
    """
    env = os.environ if environ is None else environ
    if any(var in env for var in WAIT_POLICY_VARS):
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_ticks(cpus: set[int] | None) -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over ``cpus`` (all when None), from ``/proc/stat``.
    Busy: user, system, irq, softirq and steal time; idle, iowait and nice (low priority) are
    not."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]] + [0] * (8 - len(fields[:8]))
        user, nice, system, idle, iowait, irq, softirq, steal = values
        busy += user + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    return (busy, total) if total else None


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's cores other processes keep busy, averaged over ``seconds``
    (None where ``/proc/stat`` cannot be read, e.g. not on Linux)."""
    try:
        cpus: set[int] | None = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = None
    first, own0 = _cpu_ticks(cpus), _ticks("self")
    if first is None:
        return None
    time.sleep(seconds)
    second, own1 = _cpu_ticks(cpus), _ticks("self")
    if second is None or second[1] <= first[1]:
        return None
    n = len(cpus) if cpus is not None else (os.cpu_count() or 1)
    busy = (second[0] - first[0]) - (own1 - own0)
    return max(0.0, min(float(n), n * busy / (second[1] - first[1])))


# -- claims: the threads other ncollapse runs of this user hold -------------------------------


def _claims_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"ncollapse-threads-{uid}"


def _proc_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (None when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _start_time(pid: int | str) -> str | None:
    """When process ``pid`` started (a pid and its start time name one process, even after the
    pid is reused); None when it is gone."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def _ticks(pid: int | str) -> int:
    """Clock ticks process ``pid`` (all its threads) has used; 0 when it is gone."""
    fields = _proc_stat(pid)
    try:
        return int(fields[11]) + int(fields[12]) if fields else 0  # utime + stime
    except (IndexError, ValueError):
        return 0


def _read_claims(directory: Path) -> dict[int, int]:
    """pid -> threads held, for the other live ncollapse processes; stale claims are removed."""
    claims = {}
    for path in directory.glob("*.claim"):
        try:
            pid_text, start, threads = path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if pid == os.getpid():
            continue
        if _start_time(pid) != start:  # the process has ended: its claim goes with it
            path.unlink(missing_ok=True)
            continue
        claims[pid] = int(threads)
    return claims


def _claim(threads: int) -> None:
    """Record this process's thread count for the other ncollapse runs to see."""
    global _CLAIM
    start = _start_time(os.getpid())
    if start is None:
        return
    directory = _claims_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{os.getpid()}.claim"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()} {start} {threads}\n")
    tmp.replace(path)
    if _CLAIM is None:
        atexit.register(release_claim)
    _CLAIM = path


def release_claim() -> None:
    """Withdraw this process's claim (done at exit; a claim of a process that uses no CPU is
    ignored by the others anyway)."""
    global _CLAIM
    if _CLAIM is not None:
        _CLAIM.unlink(missing_ok=True)
        _CLAIM = None


# -- the policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and why: ``reason`` is ``set`` (``run.threads``), ``environment``
    (``OMP_NUM_THREADS``), ``free cores`` (the policy) or ``no measurement`` (torch's default
    where the load cannot be read)."""

    threads: int
    reason: str
    cores: int
    busy: float | None = None
    claimed: int = 0

    def describe(self) -> str:
        """One line for the log, e.g. '1 CPU thread (2 cores, 1.0 busy; run.threads sets it)'."""
        unit = "thread" if self.threads == 1 else "threads"
        if self.reason == "set":
            return f"{self.threads} CPU {unit} (run.threads)"
        if self.reason == "environment":
            return f"{self.threads} CPU {unit} (from OMP_NUM_THREADS)"
        if self.reason == "no measurement":
            return f"{self.threads} CPU {unit} (torch's default: the load could not be read)"
        busy = "" if self.busy is None else f", {self.busy:.1f} busy"
        held = f", {self.claimed} held by other ncollapse runs" if self.claimed else ""
        return f"{self.threads} CPU {unit} ({self.cores} cores{busy}{held}; run.threads sets it)"


def _torch_default() -> int:
    global _TORCH_DEFAULT
    if _TORCH_DEFAULT is None:
        import torch

        _TORCH_DEFAULT = torch.get_num_threads()
    return _TORCH_DEFAULT


def _measure(cores: int) -> ThreadChoice:
    """The free-cores policy: sample the load, and count the threads of the other ncollapse
    runs that used the CPU while it was sampled."""
    claims = _read_claims(_claims_dir()) if _claims_dir().is_dir() else {}
    before = {pid: _ticks(pid) for pid in claims}
    busy = busy_cores()
    claimed = sum(n for pid, n in claims.items() if _ticks(pid) > before[pid])
    if busy is None:
        return ThreadChoice(_torch_default(), "no measurement", cores, None, claimed)
    taken = max(int(busy + 1 - BUSY_SHARE), claimed)
    threads = max(1, min(cores - taken, _torch_default()))
    return ThreadChoice(threads, "free cores", cores, round(busy, 2), claimed)


def choose_threads(requested: int | None = None, *, claim: bool = True) -> ThreadChoice:
    """The thread count for a run: ``requested`` when given, else the policy of the module
    docstring. With ``claim`` the choice is recorded for other ncollapse runs to see. Runs that
    choose at the same moment take turns (a file lock), so each sees the ones before it."""
    cores = usable_cores()
    if requested is not None:
        choice = ThreadChoice(int(requested), "set", cores)
    elif any(os.environ.get(var) for var in THREAD_COUNT_VARS):
        choice = ThreadChoice(_torch_default(), "environment", cores)
    else:
        lock = None
        try:
            from filelock import FileLock

            _claims_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = FileLock(str(_claims_dir() / ".lock"), timeout=10)
            lock.acquire()
        except Exception:  # no writable temp folder, no locking, a lock held too long
            lock = None
        try:
            choice = _measure(cores)
            if claim:
                _try_claim(choice.threads)
        finally:
            if lock is not None:
                lock.release()
        return choice
    if claim:
        _try_claim(choice.threads)
    return choice


def _try_claim(threads: int) -> None:
    try:
        _claim(threads)
    except OSError:
        pass


def set_threads(requested: int | None = None) -> ThreadChoice:
    """Choose the thread count (:func:`choose_threads`) and give it to torch: what the runner
    does at the start of every run. Returns the choice (``.describe()`` for the log)."""
    import torch

    choice = choose_threads(requested)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
