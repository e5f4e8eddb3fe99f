"""Using a trained run: ``ncollapse.load_run`` (the model with its preprocessing), ``ncollapse
predict`` (images, folders, list files; top-k class names; CSV or JSON) and ``ncollapse export``
(a torch.export file that loads in a fresh Python without ncollapse, with the run's logits)."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ncollapse
from ncollapse.build import build_augment, build_network
from ncollapse.cli import main
from ncollapse.data import load_data
from ncollapse.inference import export_run, load_run
from test_own_data import COUNTS, make_folder

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return ncollapse.train(
        epochs=3,
        out=out,
        name="digits",
        progress="none",
        threads=1,
        overrides=["eval.tta=true", "loss.posthoc_tau=0.5", "optim.ema=0.9"],
    )


def _test_set(run):
    cfg = ncollapse.compose(base=run.run.config_dict())
    return cfg, load_data(cfg.data)


def test_load_run_predicts_what_the_run_measured(digits_run):
    model = load_run(digits_run.run_dir)
    assert model.classes == [str(i) for i in range(10)] and model.input_shape == (1, 8, 8)
    assert not model.training
    cfg, bundle = _test_set(digits_run)
    with torch.no_grad():
        logits = model(bundle.test.images)  # uint8 images in, as they decode
    acc = (logits.argmax(1) == bundle.test.labels).double().mean().item()
    assert acc == pytest.approx(digits_run.summary["final"]["acc"], abs=1e-12)
    # the four-import way of docs/api.md gives the same logits (TTA and the adjustment aside)
    net = build_network(cfg, 10, in_channels=1)
    net.load_state_dict(torch.load(digits_run.run_dir / "model.pt"))
    net.eval()
    x = build_augment(cfg, bundle).normalize(bundle.test.images)
    with torch.no_grad():
        plain = net(x).logits
        tta = 0.5 * (plain + net(x.flip(3)).logits)
    prior = torch.log(
        torch.tensor(bundle.class_counts, dtype=torch.float64) / sum(bundle.class_counts)
    )
    want = tta - 0.5 * prior.float()
    assert torch.allclose(logits, want, atol=1e-6)
    # floats in [0, 1] (torchvision's ToTensor) are the same images
    with torch.no_grad():
        assert torch.allclose(model(bundle.test.images.float() / 255), logits, atol=1e-5)
    assert model.features(bundle.test.images[:4]).shape == (4, net.head.in_features)


def _png_folder(root: Path, images: torch.Tensor) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, x in enumerate(images):
        p = root / f"img{i:03d}.png"
        Image.fromarray(x[0].numpy()).save(p)
        paths.append(p)
    return paths


def test_predict_command_images_folders_list_files_csv_and_json(digits_run, tmp_path, capsys):
    _cfg, bundle = _test_set(digits_run)
    images = bundle.test.images[:12]
    paths = _png_folder(tmp_path / "pngs", images)
    listing = tmp_path / "pngs" / "list.txt"
    listing.write_text("# two of them\nimg000.png 3\n\nimg005.png\n")
    model = load_run(digits_run.run_dir)
    with torch.no_grad():
        want = model(images).topk(3, dim=1)

    assert main(["predict", str(digits_run.run_dir), str(tmp_path / "pngs"), "-k", "3"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [Path(r["path"]).name for r in rows] == [p.name for p in paths]
    assert [r["class_1"] for r in rows] == [str(i) for i in want.indices[:, 0].tolist()]
    assert [float(r["score_1"]) for r in rows] == pytest.approx(
        want.values[:, 0].tolist(), abs=1e-5
    )
    assert set(rows[0]) == {
        "path",
        "class_1",
        "score_1",
        "class_2",
        "score_2",
        "class_3",
        "score_3",
    }

    out = tmp_path / "p.json"
    args = ["predict", str(digits_run.run_dir), str(paths[1]), str(listing), "--out", str(out)]
    assert main(args) == 0
    recs = json.loads(out.read_text())
    assert [Path(r["path"]).name for r in recs] == ["img001.png", "img000.png", "img005.png"]
    assert len(recs[0]["top"]) == 5 and set(recs[0]["top"][0]) == {"class", "index", "score"}
    assert recs[0]["top"][0]["index"] == int(want.indices[1, 0])


@pytest.mark.parametrize(
    "bad, message",
    [
        ("missing.png", "missing.png not found"),
        ("notes.txt", "line 1: nothing.png not found"),
        ("broken.png", "cannot decode image"),
        ("empty", "holds no images"),
    ],
)
def test_predict_mistakes_are_one_line(digits_run, tmp_path, capsys, bad, message):
    (tmp_path / "notes.txt").write_text("nothing.png\n")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(digits_run.run_dir), str(tmp_path / bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ncollapse: error: ") and message in err and "\n" not in err


def test_an_unfinished_run_predicts_with_its_checkpoint(tmp_path):
    res = ncollapse.train(epochs=1, out=tmp_path, name="u", progress="none", threads=1)
    (res.run_dir / "model.pt").unlink()
    (res.run_dir / "summary.json").unlink()
    with pytest.warns(UserWarning, match="has not finished: using the weights of its last"):
        model = load_run(res.run_dir)
    assert model.weights.startswith("checkpoint")
    (res.run_dir / "checkpoint.pt").unlink()
    with pytest.raises(ncollapse.UserError, match="neither model.pt nor checkpoint.pt"):
        load_run(res.run_dir)


#: run in a fresh interpreter in which ``import ncollapse`` fails: load the export, apply it
FRESH = """
import json, sys
sys.modules["ncollapse"] = None  # not importable: the export must not need it
import torch
extra = {"ncollapse.json": ""}
program = torch.export.load(sys.argv[1], extra_files=extra)
x = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(program.module()(x), sys.argv[3])
try:
    import ncollapse  # noqa: F401
except ImportError:
    print(json.dumps(json.loads(extra["ncollapse.json"])["classes"]))
"""


def _check_export(run_dir: Path, images: torch.Tensor, tmp_path: Path) -> None:
    model = load_run(run_dir)
    with torch.no_grad():
        want = model(images)
    path = export_run(run_dir)
    assert path == run_dir / "model.pt2"
    torch.save(images, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == model.classes  # and ncollapse was not importable
    got = torch.load(tmp_path / "y.pt")
    assert torch.equal(got, want)  # the exported model's logits are the run's


@pytest.mark.slow
def test_export_of_the_digits_run_loads_without_ncollapse(digits_run, tmp_path):
    _cfg, bundle = _test_set(digits_run)
    _check_export(digits_run.run_dir, bundle.test.images[:50], tmp_path)
    # the command line says where it wrote
    assert main(["export", str(digits_run.run_dir), "--out", str(tmp_path / "d.pt2")]) == 0
    assert (tmp_path / "d.pt2").is_file()


@pytest.mark.slow
def test_predict_and_export_of_an_image_folder_run(tmp_path, capsys):
    root = make_folder(tmp_path / "mine", size=(10, 12))
    res = ncollapse.train(
        overrides=["data.name=imagefolder", f"data.root={root}"],
        epochs=1,
        out=tmp_path / "runs",
        name="mine",
        progress="none",
        threads=1,
    )
    model = load_run(res.run_dir)
    assert model.classes == list(COUNTS) and model.input_shape == (3, 10, 12)
    # an image of another size and mode is fitted to 10 x 12 RGB
    other = tmp_path / "big.jpg"
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(other)
    assert (
        main(["predict", str(res.run_dir), str(other), str(root / "test" / "cat"), "-k", "2"]) == 0
    )
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 + 6 and all(r["class_1"] in COUNTS for r in rows)
    images = model.preprocess(sorted((root / "test").rglob("*.png")))
    assert images.shape == (30, 3, 10, 12) and images.dtype == torch.uint8
    _check_export(res.run_dir, images, tmp_path)


def test_a_run_written_before_data_json_held_the_preprocessing(digits_run, tmp_path):
    """Its data gives the normalisation statistics: the same model as a new run's."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(digits_run.run_dir, old)
    record = json.loads((old / "data.json").read_text())
    del record["preprocess"]
    (old / "data.json").write_text(json.dumps(record))
    _cfg, bundle = _test_set(digits_run)
    with torch.no_grad():
        want = load_run(digits_run.run_dir)(bundle.test.images)
        assert torch.equal(load_run(old)(bundle.test.images), want)
