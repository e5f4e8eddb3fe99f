"""ResNet-50 backbones (torchvision key names) and pretrained weights from a local file."""

from __future__ import annotations

import pytest
import torch

from ncollapse.errors import ConfigError
from ncollapse.models import build_backbone


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def r50():
    torch.manual_seed(0)
    return build_backbone("resnet50").eval()


def test_resnet50_shape_params_and_torchvision_keys(r50):
    assert r50.out_features == 2048
    assert _nparams(r50) == 23_508_032  # torchvision's 25,557,032 less its 1000-way fc
    sd = r50.state_dict()
    assert len(sd) == 318 and not any(k.startswith("fc.") for k in sd)
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.bn3.running_var": (1024,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.0.downsample.1.num_batches_tracked": (),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert r50.layer2[0].conv2.stride == (2, 2)  # v1.5: the stride sits in the 3x3 conv
    with torch.no_grad():
        assert r50(torch.randn(2, 3, 64, 64)).shape == (2, 2048)


def test_resnet50_4096_last_stage():
    m = build_backbone("resnet50_4096")
    assert m.out_features == 4096
    assert m.layer4[0].conv1.out_channels == 1024 and m.layer4[2].bn3.num_features == 4096
    assert m.layer3[0].conv3.out_channels == 1024  # the first three stages are ResNet-50's
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 4096)


def test_pretrained_roundtrip_identical_outputs(r50, tmp_path):
    state = dict(r50.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.randn(1000)
    plain, wrapped = tmp_path / "r50.pth", tmp_path / "ckpt.pth"
    torch.save(state, plain)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = r50(x)
    for path in (plain, wrapped):
        torch.manual_seed(1)  # a different random init, overwritten by the file
        m = build_backbone("resnet50", pretrained=str(path)).eval()
        assert m.pretrained_info["dropped"] == ["fc.bias", "fc.weight"]
        with torch.no_grad():
            assert torch.equal(m(x), want)


def test_pretrained_mismatch_is_one_clear_error(r50, tmp_path):
    state = dict(r50.state_dict())
    del state["bn1.bias"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ConfigError) as e:
        build_backbone("resnet50", pretrained=bad)
    msg = str(e.value)
    assert "missing keys: bn1.bias" in msg and "unexpected keys: extra.weight" in msg
    good = tmp_path / "r50.pth"
    torch.save(r50.state_dict(), good)
    with pytest.raises(ConfigError, match=r"shape mismatches: layer4\.0\.bn1\.bias"):
        build_backbone("resnet50_4096", pretrained=good)
    with pytest.raises(ConfigError, match="not found"):
        build_backbone("resnet50", pretrained=tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read"):
        build_backbone("resnet50", pretrained=junk)
    torch.save({"a": 1}, junk)
    with pytest.raises(ConfigError, match="state dict"):
        build_backbone("resnet50", pretrained=junk)
