"""The engine's streaming path: list-file data decoded by DataLoader workers trains, evaluates and
measures collapse end to end, in the resident path's epoch order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ncollapse
from ncollapse.data import ArrayDataset, make_augment
from ncollapse.engine.batches import ResidentBatches
from ncollapse.engine.sources import StreamingBatches
from ncollapse.errors import UserError
from ncollapse.rundir import read_metrics

Image = pytest.importorskip("PIL.Image")


def write_jpegs(root: Path, train=(9, 5, 3), test=3) -> dict[str, str]:
    """Random JPEGs of mixed sizes under root/img/<class>/ and train/test list files."""
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for split, counts in (("train", train), ("test", [test] * len(train))):
        for c, n in enumerate(counts):
            (root / "img" / str(c)).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (20 + 3 * i, 24 + 2 * c)
                rel = f"img/{c}/{split}{i}.jpg"
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
                lines[split].append(f"{rel} {c}")
    for split, ls in lines.items():
        (root / f"{split}.txt").write_text("\n".join(ls) + "\n")
    return {"data.train_list": "train.txt", "data.test_list": "test.txt"}


def _overrides(root: Path, **more) -> dict:
    sets = {
        "data.name": "listfile",
        "data.root": str(root),
        **write_jpegs(root),
        "data.size": 16,
        "data.workers": 2,
        "optim.epochs": 1,
        "optim.warmup_epochs": 0,
        "optim.milestones": "[]",
        "optim.batch_size": 6,
        "optim.mixup_alpha": 0.2,
        "eval.batch_size": 5,
        "run.out_dir": str(root / "runs"),
        "run.progress": "none",
        "run.tensorboard": False,
    }
    sets.update(more)
    return sets


def test_list_file_data_trains_an_epoch_through_two_workers(tmp_path):
    sets = _overrides(tmp_path, **{"run.name": "stream"})
    res = ncollapse.train(method="etf_dr", overrides=[f"{k}={v}" for k, v in sets.items()])
    records = read_metrics(res.run_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 1 and np.isfinite(train[0]["loss"]) and train[0]["images_per_s"] > 0
    assert {(r["kind"], r.get("split")) for r in records if r["kind"] != "train"} == {
        ("eval", "test"),
        ("collapse", "train"),
        ("collapse", "test"),
    }
    collapse = {r["split"]: r for r in records if r["kind"] == "collapse"}
    assert collapse["train"]["class_counts"] == [9, 5, 3]  # every training image measured once
    assert collapse["test"]["class_counts"] == [3, 3, 3]
    assert 0.0 <= res.summary["final"]["acc"] <= 1.0
    assert (res.run_dir / "collapse_final.npz").is_file()


class _Indexed(torch.utils.data.Dataset):
    """A streaming dataset whose sample i is an image filled with i / 255."""

    resident = False

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def view(self, train, seed, epoch):
        return self

    def __getitem__(self, i):
        return torch.full((1, 2, 2), i / 255.0), int(self.labels[i])


@pytest.mark.parametrize("balanced_from", [None, 0])
def test_resident_and_streamed_data_share_the_first_epoch_order(balanced_from):
    labels = torch.tensor([0] * 20 + [1] * 9 + [2] * 5)  # 34 samples: 4 batches of 8 and one of 2
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    resident = ResidentBatches(
        ArrayDataset(images.contiguous(), labels, ["a", "b", "c"]).images,
        labels,
        make_augment("none", (0.0,), (1.0,)),
        batch_size=8,
        balanced_from=balanced_from,
    )
    streamed = StreamingBatches(
        _Indexed(labels),
        batch_size=8,
        workers=0,
        device=torch.device("cpu"),
        balanced_from=balanced_from,
    )
    a = list(resident.epoch(0, 3, 0.0))
    b = list(streamed.epoch(0, 3, 0.0))
    assert len(a) == len(b) == 5
    for sa, sb in zip(a, b):
        assert torch.equal(sa.batch.y, sb.batch.y)
        assert torch.allclose(sa.x.flatten(1)[:, 0], sb.x.flatten(1)[:, 0])  # the same samples


def test_extra_batches_on_streamed_data_are_refused_in_one_line(tmp_path):
    sets = _overrides(tmp_path, **{"run.name": "allnc", "optim.mixup_alpha": 0.0})
    with pytest.raises(UserError) as info:
        ncollapse.train(method="allnc", overrides=[f"{k}={v}" for k, v in sets.items()])
    message = str(info.value)
    assert "extra batches (reversed)" in message and "allnc.gbbn=false" in message
    assert "\n" not in message
    assert not (tmp_path / "runs" / "allnc").exists()


def test_batch_augmentation_is_refused_for_streamed_data(tmp_path):
    sets = _overrides(tmp_path, **{"data.augment": "standard"})
    with pytest.raises(UserError, match="augmented per sample"):
        ncollapse.train(method="etf_dr", overrides=[f"{k}={v}" for k, v in sets.items()])
