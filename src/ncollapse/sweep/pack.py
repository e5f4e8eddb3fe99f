"""``ncollapse sweep --pack N``: cells that share a network shape trained N at a time in one
process, as one batched model (:class:`ncollapse.engine.pack.PackedTrainer`).

Cells are grouped in run order by what a pack needs them to share (:func:`pack_key`: the data,
the backbone and its width, the batch size, the number of epochs, the device and the
precision, and where a resumed cell starts); seeds of one method and methods on the same
backbone (``ce`` and ``etf_dr``) pack together, a method on another backbone or schedule does
not. Each cell is claimed with its lock as the one-at-a-time loop claims it, and made ready as
that loop makes it (a path the sweep did not make is refused, a cell it made that stopped before
its first checkpoint is removed, a cell's ``.<cell>.created`` mark is left before its directory
is made); each keeps its own run directory, the same in content as trained alone (to float
rounding). A cell that cannot be packed (alone in its group, streamed data, a loss with extra
batches) is left to the one-at-a-time loop, with a line saying so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, config_to_dict
from ..rundir import Run, SavedRun
from .spec import cell_name

__all__ = ["pack_key", "resume_point", "train_packs"]

Cell = tuple[float, int, str]  # (imbalance factor, seed, method)


def pack_key(cfg: Config, start_epoch: int | list[Any] = 0) -> str:
    """What the cells of one pack share, as one string: the data, the backbone and its width,
    the batch size, the number of epochs, the device, the precision and layout, and where a
    resumed cell goes on from (:func:`resume_point`)."""
    return json.dumps(
        {
            "data": config_to_dict(cfg.data),
            "backbone": [cfg.model.backbone, cfg.model.width, cfg.model.pretrained],
            "batch_size": cfg.optim.batch_size,
            "epochs": cfg.optim.epochs,
            "run": [cfg.run.device, cfg.run.amp, cfg.run.channels_last, cfg.run.threads],
            "start": start_epoch,
        },
        sort_keys=True,
    )


def resume_point(checkpoint: dict[str, Any]) -> list[Any]:
    """Where a checkpoint goes on from: ``[epochs completed, steps of the next epoch done,
    whether only its evaluation is left]`` (a checkpoint saved on a signal stops inside an
    epoch; the cells of a pack resume from one step, as they stopped together)."""
    at = checkpoint.get("position") or {}
    return [int(checkpoint["epoch"]), int(at.get("step", 0)), at.get("record") is not None]


def train_packs(
    cells: list[Cell],
    configs: dict[Cell, Config],
    out: Path,
    pack: int,
    *,
    lock: Callable[[Path, str], Any],
    make_ready: Callable[[str, str, Callable[[str], None]], None],
    load_bundle: Callable[[Config], Any],
    log: Callable[[str], None],
) -> tuple[list[str], list[str]]:
    """Train the packable cells of ``cells`` (new, started or resumable ones) ``pack`` at a
    time; returns the names of the cells trained from scratch and of those resumed.
    ``lock(out, name)`` makes a cell's lock (``acquire()`` False when another process holds it,
    ``release()``); ``make_ready(name, status, say)`` readies a claimed cell to train from
    scratch (new or started: the sweep's ``.created`` marks) or refuses it with a
    :class:`UserError`; ``load_bundle(cfg)`` the data of a cell."""
    from ..runner import run_packed

    groups: dict[str, list[tuple[Cell, SavedRun | None]]] = {}
    for c in cells:
        r, s, m = c
        run = Run(out / cell_name(m, r, s))
        status = run.status()
        if status not in ("new", "started", "resumable"):
            continue
        saved = run.read_saved() if status == "resumable" else None
        start = resume_point(saved.checkpoint) if saved and saved.checkpoint else 0
        groups.setdefault(pack_key(configs[c], start), []).append((c, saved))
    ran: list[str] = []
    resumed: list[str] = []
    for members in groups.values():
        if len(members) == 1:
            (r, s, m), _ = members[0]
            log(
                f"sweep: --pack {pack}: {cell_name(m, r, s)} trains alone: no other cell shares "
                "its data, backbone, batch size, schedule length and device"
            )
            continue
        for i in range(0, len(members), pack):
            chunk = members[i : i + pack]
            if len(chunk) == 1:
                (r, s, m), _ = chunk[0]
                log(
                    f"sweep: --pack {pack}: {cell_name(m, r, s)} trains alone: the last of its group"
                )
                continue
            done = _train_pack(chunk, configs, out, lock, make_ready, load_bundle, log, run_packed)
            ran += done[0]
            resumed += done[1]
    return ran, resumed


def _train_pack(
    chunk: list[tuple[Cell, SavedRun | None]],
    configs: dict[Cell, Config],
    out: Path,
    lock: Callable[[Path, str], Any],
    make_ready: Callable[[str, str, Callable[[str], None]], None],
    load_bundle: Callable[[Config], Any],
    log: Callable[[str], None],
    run_packed: Callable[..., list[Any]],
) -> tuple[list[str], list[str]]:
    held, members = [], []
    try:
        for c, saved in chunk:
            r, s, m = c
            name = cell_name(m, r, s)
            claim = lock(out, name)
            if not claim.acquire():
                continue  # another process trains it: the one-at-a-time loop says so
            held.append(claim)
            status = Run(out / name).status()  # again, now that it is ours
            if status in ("new", "started") and saved is None:
                make_ready(name, status, lambda msg, n=name: log(f"sweep: --pack: {n}: {msg}"))
                members.append((c, name, saved))
            elif status == "resumable" and saved is not None:
                members.append((c, name, saved))
        if not members:
            return [], []
        names = [name for _, name, _ in members]
        if len(members) == 1:
            log(f"sweep: --pack: {names[0]} trains alone: the cells packed with it were taken")
        else:
            log(f"sweep: packing {len(members)} cells into one batched model: {', '.join(names)}")
        first = configs[members[0][0]]
        results = run_packed(
            [configs[c] for c, _, _ in members],
            resumes=[saved.run.path if saved else None for _, _, saved in members],
            bundle=load_bundle(first),
            prefixes=[f"[pack] {name} " for name in names],
            log=lambda msg: log(f"sweep: --pack: {msg}"),
        )
    finally:
        for claim in held:
            claim.release()
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    ran = [name for _, name, saved in members if saved is None]
    resumed = [name for _, name, saved in members if saved is not None]
    return ran, resumed
