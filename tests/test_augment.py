"""BatchAugment: zero-padded random crop + flip + normalise on whole batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ncollapse.data.augment import BatchAugment, make_augment

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def _batch(b=16, c=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (b, c, h, w), generator=g, dtype=torch.int64).to(torch.uint8)


def test_normalize_matches_totensor_normalize():
    x = _batch()
    aug = BatchAugment(MEAN, STD)
    ref = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(aug.normalize(x), ref, rtol=1e-5, atol=1e-5)
    assert aug.normalize(x).dtype == torch.float32


def test_each_output_is_a_padded_window_possibly_mirrored():
    x = _batch(b=64)
    p = 4
    aug = BatchAugment(MEAN, STD, crop_padding=p, flip=True)
    out = aug.crop_flip(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (p, p, p, p))
    offsets, flips = set(), 0
    for i in range(x.shape[0]):
        found = None
        for dy in range(2 * p + 1):
            for dx in range(2 * p + 1):
                win = padded[i, :, dy : dy + 32, dx : dx + 32]
                if torch.equal(out[i], win):
                    found = (dy, dx, False)
                elif torch.equal(out[i], win.flip(-1)):
                    found = (dy, dx, True)
                if found:
                    break
            if found:
                break
        assert found is not None, f"sample {i} is not a window of the zero-padded image"
        offsets.add(found[:2])
        flips += found[2]
    assert len(offsets) > 20  # offsets spread over [0, 2p]^2
    assert 10 < flips < 54


def test_padding_is_raw_zero_before_normalisation():
    x = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    aug = BatchAugment(MEAN, STD, crop_padding=4, flip=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        raw = aug.crop_flip(x, g)
        if (raw == 0).any():
            break
    assert (raw == 0).any()
    out = aug.normalize(raw)
    zero_val = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(out[0, :, raw[0, 0] == 0][:, 0], zero_val)


def test_offsets_cover_full_range_and_flip_mirrors():
    # a one-hot image tells the offset exactly
    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[0, 0, 0, 0] = 255
    x = x.repeat(400, 1, 1, 1)
    aug = BatchAugment((0.5,), (0.5,), crop_padding=2, flip=False)
    out = aug.crop_flip(x, torch.Generator().manual_seed(3))
    pos = set()
    for o in out:
        nz = (o[0] == 255).nonzero()
        if len(nz):
            pos.add(tuple(nz[0].tolist()))
    # pixel (0,0) lands at (2-dy, 2-dx) when visible: dy, dx in {0..4} -> rows/cols {0,1,2}
    assert pos == {(r, c) for r in range(3) for c in range(3)}
    flip_only = BatchAugment((0.5,), (0.5,), crop_padding=0, flip=True)
    y = flip_only.crop_flip(x[:200], torch.Generator().manual_seed(0))
    mirrored = [bool(torch.equal(y[i], x[i].flip(-1))) for i in range(200)]
    same = [bool(torch.equal(y[i], x[i])) for i in range(200)]
    assert all(m or s for m, s in zip(mirrored, same))
    assert 60 < sum(mirrored) < 140


def test_deterministic_with_seeded_generator():
    x = _batch()
    aug = BatchAugment(MEAN, STD)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == torch.float32


def test_none_is_normalise_only():
    x = _batch(b=4)
    aug = make_augment("none", MEAN, STD)
    torch.testing.assert_close(aug(x, None), aug.normalize(x))
    with pytest.raises(ValueError, match="standard"):
        make_augment("fancy", MEAN, STD)


def test_channel_mismatch():
    with pytest.raises(ValueError, match="channels"):
        BatchAugment((0.5,), (0.5,)).normalize(_batch(b=1))
