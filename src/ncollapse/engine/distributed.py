"""Data-parallel training under ``torchrun`` (DistributedDataParallel), and the collectives the
engine needs; ``docs/distributed.md`` describes the design.

``torchrun --nproc_per_node N -m ncollapse train ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`init_distributed` joins them into one process group
(gloo on the CPU, NCCL on CUDA, device ``cuda:LOCAL_RANK``). Every process builds the same global
batch and trains on its contiguous share of it; DDP averages the gradients. Rank 0 alone writes the
run directory (the other ranks see it through :class:`ReadOnlyRun`).

A :class:`Distributed` describes the process group. The one-process value :data:`SINGLE` makes
every collective an identity, so callers never branch on the world size.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import nn

from ..errors import UserError
from .state import resolve_device

__all__ = [
    "SINGLE",
    "Distributed",
    "ReadOnlyRun",
    "exit_process",
    "followed_runs",
    "gather_shards",
    "init_distributed",
    "is_main_process",
    "peer_gone",
    "shard_bounds",
    "shard_sizes",
    "stopping",
    "torchrun_env",
]

T = TypeVar("T")


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets, or None."""
    try:
        return tuple(int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))  # type: ignore[return-value]
    except (KeyError, ValueError):
        return None


def is_main_process() -> bool:
    """False only in a rank other than 0 of a torchrun job (the process group joined or not
    yet): what the commands check before printing their results, so that a data-parallel run
    prints its summary once."""
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank() == 0
    env = torchrun_env()
    return env is None or env[0] == 0


def shard_sizes(n: int, world_size: int) -> list[int]:
    """How many of ``n`` samples each rank takes: contiguous, as equal as possible (floor splits,
    so ``n`` divisible by the world size gives equal shares)."""
    return [(r + 1) * n // world_size - r * n // world_size for r in range(world_size)]


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[lo, hi)``: rank ``rank``'s contiguous share of ``n`` samples."""
    return rank * n // world_size, (rank + 1) * n // world_size


@dataclass(frozen=True)
class Distributed:
    """The process group a run trains in (``world_size == 1``: one process, no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    # ------------------------------------------------------------------ collectives
    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks of ``t`` (a new tensor, on ``t``'s device)."""
        if not self.enabled:
            return t
        buf = t.detach().to(self.device).contiguous().clone()
        tdist.all_reduce(buf)
        return buf.to(t.device)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``t`` concatenated along dim 0 in rank order (row counts may differ)."""
        if not self.enabled:
            return t
        sizes = [int(n) for n in self.all_gather_object(int(t.shape[0]))]
        return _all_gather_rows(t.detach(), sizes, self.device)

    def sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm statistics) on every rank: without SyncBatchNorm each rank
        updates them from its own share, so they are made equal before anything is measured or
        saved (DDP itself broadcasts rank 0's at the start of every forward)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for b in module.buffers():
                buf = b.detach().to(self.device)
                tdist.broadcast(buf, src=0)
                if buf.data_ptr() != b.data_ptr():
                    b.copy_(buf)

    # ------------------------------------------------------------------ agreement
    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0 only, its result on every rank; a :class:`UserError` it raises is
        raised on every rank (so a refused name stops all processes with one message)."""
        if not self.enabled:
            return fn()
        result: Any = None
        error: BaseException | None = None
        if self.is_main:
            try:
                result = fn()
            except BaseException as exc:
                error = exc
        message = None
        if error is not None:
            message = str(error) if isinstance(error, UserError) else f"rank 0 failed: {error!r}"
        result, message = self.broadcast_object((result, message))
        if error is not None:
            raise error
        if message is not None:
            raise UserError(message)
        return result

    def first_per_node(self, fn: Callable[[], T]) -> T:
        """``fn()`` on each node's first process, then on the others (data caches are then
        written once per node and read by the other processes)."""
        if not self.enabled:
            return fn()
        result: Any = None
        error: BaseException | None = None
        if self.local_rank == 0:
            try:
                result = fn()
            except BaseException as exc:
                error = exc
        self.barrier()
        if error is not None:
            raise error
        return result if self.local_rank == 0 else fn()

    def check_same(self, what: str, value: Any) -> None:
        """Refuse to go on when the ranks disagree on ``value`` (e.g. each process of a sweep
        started under torchrun claimed a different run)."""
        if not self.enabled:
            return
        digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        seen = self.all_gather_object(digest)
        if len(set(seen)) > 1:
            odd = [r for r, d in enumerate(seen) if d != seen[0]]
            raise UserError(
                f"the {self.world_size} processes of this torchrun job were given different "
                f"{what} (ranks {odd} differ from rank 0); every process must train the same run "
                "(run a sweep's cells one per job, e.g. `ncollapse sweep ... --cell I`)"
            )

    # ------------------------------------------------------------------ the model
    def wrap(self, network: nn.Module) -> nn.Module:
        """The module the training steps call: ``network`` itself in one process, else DDP."""
        if not self.enabled:
            return network
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=ids)


#: one process: every collective is the identity
SINGLE = Distributed()


def init_distributed(device_name: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when this process was started by torchrun with more
    than one process; return it and this process's device (``cuda:LOCAL_RANK`` on CUDA)."""
    env = torchrun_env()
    if env is None or env[1] <= 1:
        return SINGLE, resolve_device(device_name)
    rank, world, local = env
    device = resolve_device(device_name)
    if device.type == "cuda":
        if device_name not in ("auto", "cuda"):
            raise UserError(
                f"run.device={device_name}: under torchrun every process uses cuda:LOCAL_RANK; "
                "give --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
            )
        if local >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible: start "
                "torchrun with --nproc_per_node at most the number of GPUs per node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"data-parallel training runs on cpu or cuda, not {device}")
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
        atexit.register(_shutdown)
    elif tdist.get_world_size() != world:
        raise UserError(f"a process group of {tdist.get_world_size()} is open, not of {world}")
    if rank != 0:  # one copy of every warning is enough: rank 0's
        warnings.simplefilter("ignore")
    return Distributed(rank, world, local, backend, device), device


#: what gloo (and NCCL) say when a collective's peer process is gone
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote worker crashing",
    "NCCL communicator was aborted",
)
_FOLLOWED: list[Any] = []  # run directories this process follows (a rank other than 0)
_STOPPING = [False]  # set once the job is stopping under this process: no more collectives


def peer_gone(exc: BaseException) -> str | None:
    """What ``exc`` says when it is the error a collective raises because another process of
    this torchrun job has exited (killed, crashed), or None for any other error."""
    if not isinstance(exc, RuntimeError) or not (tdist.is_available() and tdist.is_initialized()):
        return None
    return next((p for p in PEER_GONE if p in str(exc)), None)


def followed_runs() -> list[Any]:
    """The run directories a rank other than 0 has trained in (through :class:`ReadOnlyRun`)."""
    return list(_FOLLOWED)


def stopping() -> None:
    """The job is stopping under this process (a peer is gone, torchrun sent SIGTERM): leave
    without meeting the others (:func:`exit_process` skips the farewell barrier, which a gone
    peer would make wait)."""
    _STOPPING[0] = True


def exit_process(code: int) -> None:
    """End this process with ``code`` at once if it joined a process group; return otherwise.

    A process that trained with DDP on gloo cannot rely on the interpreter's normal teardown:
    PyTorch's DDP keeps the process group alive past ``destroy_process_group`` (its gloo threads
    keep running, measured with torch 2.13), and the C++ teardown at exit then aborts now and
    then (SIGABRT, "terminate called without an active exception"; seen once in CI and once in
    31 local two-process jobs, then in none of 314 more). torchrun reports such a job as failed
    although every file was written. So the process group is left together, the exit handlers
    run (logging, multiprocessing, our own) and the streams are flushed, then the process ends
    without the teardown (``os._exit``). The ``ncollapse`` command does this; a script of your
    own that trains under torchrun can call it last, once its own files are closed."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return
    try:
        for thread in threading.enumerate():  # what the interpreter would wait for at exit
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        _shutdown()  # also for a group opened without init_distributed (no exit handler then)
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):  # closed or replaced: nothing to keep
                pass
        os._exit(code)


def _shutdown() -> None:
    """Leave the process group together (all ranks meet first, then destroy it). Registered at
    exit by :func:`init_distributed`; this alone does not stop the teardown abort after DDP,
    which is why the command ends through :func:`exit_process`."""
    if tdist.is_initialized() and not _STOPPING[0]:
        try:
            tdist.barrier()
        except Exception:  # a peer already gone: nothing left to wait for
            pass
        tdist.destroy_process_group()


# ---------------------------------------------------------------------- gathering shards
def _all_gather_rows(t: torch.Tensor, sizes: Sequence[int], device: torch.device) -> torch.Tensor:
    most = max(sizes)
    buf = t.to(device)
    if buf.shape[0] < most:
        pad = buf.new_zeros((most - buf.shape[0], *buf.shape[1:]))
        buf = torch.cat([buf, pad])
    buf = buf.contiguous()
    parts = [torch.empty_like(buf) for _ in sizes]
    tdist.all_gather(parts, buf)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)


class _GatherShards(torch.autograd.Function):
    """All ranks' shards concatenated; the gradient flows back to this rank's own rows.

    Every rank computes the same loss on the gathered batch, so the gradient of the gathered
    tensor is the same on every rank and the rows of this rank need no communication. They are
    scaled by the world size because DDP averages (not sums) the parameter gradients over ranks:
    the result is the one-process gradient of the loss on the whole batch.
    """

    @staticmethod
    def forward(ctx: Any, t: torch.Tensor, sizes: list[int], dist: Distributed) -> torch.Tensor:
        ctx.lo, ctx.hi = sum(sizes[: dist.rank]), sum(sizes[: dist.rank + 1])
        ctx.world = dist.world_size
        return _all_gather_rows(t.detach(), sizes, dist.device)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad[ctx.lo : ctx.hi] * ctx.world, None, None


def gather_shards(t: torch.Tensor, sizes: Sequence[int], dist: Distributed) -> torch.Tensor:
    """The global batch's rows of ``t`` (this rank holds ``sizes[rank]`` of them), with the
    gradient routed back to this rank's rows (see :class:`_GatherShards`)."""
    if not dist.enabled:
        return t
    return _GatherShards.apply(t, list(sizes), dist)


# ---------------------------------------------------------------------- the run directory
_WRITERS = ("write_", "save_", "append_", "truncate_")


class ReadOnlyRun:
    """The run directory as a rank other than 0 sees it: paths and readers go through, every
    writer (``write_*``, ``save_*``, ``append_*``, ``truncate_*``) does nothing."""

    writes = False

    def __init__(self, run: Any) -> None:
        self._run = run
        _FOLLOWED.append(run)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._run, name)
        if callable(attr) and name.startswith(_WRITERS):
            return _skip
        return attr

    def __repr__(self) -> str:
        return f"ReadOnlyRun({self._run!r})"


def _skip(*_args: Any, **_kwargs: Any) -> None:
    return None
