"""Backbone weights from a local file (``model.pretrained``), e.g. a torchvision ResNet-50 file.

Accepted: a state dict saved with ``torch.save``, or a checkpoint dict holding one under
``state_dict`` / ``model`` / ``backbone``; a ``module.`` prefix (DataParallel/DDP) is removed and
classifier entries (``fc.*``) are dropped. Everything else must match exactly: missing keys,
unexpected keys and shape mismatches are all reported together in one
:class:`~ncollapse.errors.ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["load_pretrained", "read_state_dict"]

_DROPPED_PREFIXES = ("fc.",)


def _short(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weight file, unwrapped and with ``module.`` prefixes removed."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"model.pretrained: weight file not found: {p}")
    try:
        obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ConfigError(f"model.pretrained: cannot read {p} as PyTorch weights ({e})") from None
    for key in ("state_dict", "model", "backbone"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"model.pretrained: {p} does not hold a state dict of tensors")
    out = {}
    for k, v in obj.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        out[k] = v
    bad = [k for k, v in out.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ConfigError(
            f"model.pretrained: {p} holds NaN or inf in {len(bad)} of its tensors "
            f"({_short(bad, 3)}); these weights cannot start a run: use another weight file"
        )
    return out


def load_pretrained(model: nn.Module, path: str | os.PathLike, name: str = "backbone") -> dict:
    """Load ``path`` into ``model`` (strict, after dropping ``fc.*``); returns what was dropped."""
    state = read_state_dict(path)
    dropped = sorted(k for k in state if k.startswith(_DROPPED_PREFIXES))
    state = {k: v for k, v in state.items() if k not in dropped}
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_short(shapes, 4)}")
        raise ConfigError(
            f"model.pretrained: {path} does not fit backbone {name!r} ("
            + "; ".join(parts)
            + "). It needs the same architecture with torchvision key names"
        )
    model.load_state_dict(state, strict=True)
    return {"path": str(path), "dropped": dropped}
