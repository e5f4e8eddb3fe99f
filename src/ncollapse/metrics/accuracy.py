"""Long-tailed accuracy splits, as in the LDAM-DRW protocol (Cao et al., 2019).

Two accuracies of the whole set are reported side by side:

- ``acc``: the image-weighted accuracy, the plain fraction of correct samples;
- ``bal_acc``: the class-balanced accuracy, the mean of the per-class accuracies (each class
  counts once). On a balanced test set the two agree; on a long-tailed evaluation set (a
  validation split drawn from a long-tailed folder, say) ``acc`` is dominated by the large
  classes and ``bal_acc`` is the one to compare methods and choose settings on.

And two splits into groups:

- by training count: ``many`` (n > 100), ``medium`` (20 <= n <= 100), ``few`` (n < 20), for
  any data;
- by class index (``*_idx``), for parity with the official CIFAR-LT tables: K = 10 -> [0,3),
  [3,7), [7,10); K = 100 -> [0,36), [36,71), [71,100); any other K -> thirds
  [0, round(K/3)), [round(K/3), round(2K/3)), [round(2K/3), K); or the groups you pass. An index
  range means head / middle / tail only where the classes are sorted by training count, largest
  first (CIFAR-LT, digits-LT); for other data (an image folder's classes in name order) these
  keys are left out.

A group's accuracy is the mean of the per-class accuracies of its classes (each class counts
once, whatever its number of test samples). Classes without test samples have per-class
accuracy ``None`` and are left out of every group mean and of ``bal_acc``; a group with no
(measurable) class is ``None``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FEW_THRESHOLD",
    "MANY_THRESHOLD",
    "balanced_accuracy",
    "count_groups",
    "index_groups",
    "long_tail_accuracy",
    "sorted_by_count",
]

MANY_THRESHOLD = 100  # many: n > 100
FEW_THRESHOLD = 20  # few: n < 20; medium: 20 <= n <= 100


def _to_numpy_int(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr.astype(np.int64)


def count_groups(class_counts: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """Class indices in the many / medium / few groups by training count."""
    counts = [int(c) for c in class_counts]
    many = [k for k, c in enumerate(counts) if c > MANY_THRESHOLD]
    medium = [k for k, c in enumerate(counts) if FEW_THRESHOLD <= c <= MANY_THRESHOLD]
    few = [k for k, c in enumerate(counts) if c < FEW_THRESHOLD]
    return many, medium, few


def index_groups(num_classes: int) -> tuple[list[int], list[int], list[int]]:
    """Class-index groups: the official CIFAR-10/100 ranges, thirds for any other K."""
    k = int(num_classes)
    if k == 10:
        a, b = 3, 7
    elif k == 100:
        a, b = 36, 71
    else:
        a, b = round(k / 3), round(2 * k / 3)
    return list(range(0, a)), list(range(a, b)), list(range(b, k))


def sorted_by_count(class_counts: Sequence[int]) -> bool:
    """Whether the classes are in order of training count, largest first (ties allowed): the
    condition under which the class-index split means head / middle / tail."""
    counts = [int(c) for c in class_counts]
    return all(a >= b for a, b in itertools.pairwise(counts))


def balanced_accuracy(record: dict[str, Any]) -> float | None:
    """The class-balanced accuracy of an accuracy record: its ``bal_acc``, or for records
    written before that key existed, the mean of its ``per_class`` accuracies."""
    if record.get("bal_acc") is not None:
        return float(record["bal_acc"])
    return _group_mean(
        list(record.get("per_class") or []), range(len(record.get("per_class") or []))
    )


def _group_mean(per_class: list[float | None], idx: Iterable[int]) -> float | None:
    vals = [per_class[k] for k in idx if per_class[k] is not None]
    return float(np.mean(vals)) if vals else None


def long_tail_accuracy(
    preds: Any,
    labels: Any,
    class_counts: Sequence[int],
    class_index_groups: Sequence[Iterable[int]] | None = None,
    index_split: bool | None = None,
) -> dict:
    """Overall (image-weighted and class-balanced), per-class and many/medium/few accuracy.

    ``preds``, ``labels``: 1-D integer tensors or arrays (predicted and true class of each test
    sample). ``class_counts``: *training* count per class (defines K and the count split).
    ``class_index_groups``: optional three iterables of class indices (many, medium, few) that
    replace the default index ranges of :func:`index_groups`. ``index_split``: whether to
    report the ``*_idx`` groups; None: when given groups, or when the classes are sorted by
    training count (:func:`sorted_by_count`).

    Returns ``{"acc", "bal_acc", "per_class", "many", "medium", "few"}`` and, with the index
    split, ``"many_idx", "medium_idx", "few_idx"``, as plain Python floats (``None`` where
    undefined), ready for JSON.
    """
    p = _to_numpy_int(preds, "preds")
    y = _to_numpy_int(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    k = len(class_counts)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{y.min()}, {y.max()}]")
    correct = p == y
    total = np.bincount(y, minlength=k)
    hits = np.bincount(y, weights=correct.astype(np.float64), minlength=k)
    per_class: list[float | None] = [
        float(hits[c] / total[c]) if total[c] > 0 else None for c in range(k)
    ]
    if class_index_groups is None:
        groups_idx = index_groups(k)
    else:
        groups_idx = tuple(list(int(c) for c in g) for g in class_index_groups)
        if len(groups_idx) != 3:
            raise ValueError("class_index_groups must be three groups: many, medium, few")
    many, medium, few = count_groups(class_counts)
    out = {
        "acc": float(correct.mean()) if y.size else None,
        "bal_acc": _group_mean(per_class, range(k)),
        "per_class": per_class,
        "many": _group_mean(per_class, many),
        "medium": _group_mean(per_class, medium),
        "few": _group_mean(per_class, few),
    }
    if index_split is None:
        index_split = class_index_groups is not None or sorted_by_count(class_counts)
    if index_split:
        out["many_idx"] = _group_mean(per_class, groups_idx[0])
        out["medium_idx"] = _group_mean(per_class, groups_idx[1])
        out["few_idx"] = _group_mean(per_class, groups_idx[2])
    return out
