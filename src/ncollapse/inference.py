"""A trained run, ready for inference: :func:`load_run`, :func:`predict_files` and
:func:`export_run` (``ncollapse predict`` and ``ncollapse export``).

:func:`load_run` rebuilds the run's network from its saved config, loads the weights it
evaluated (``model.pt``: the weight average when the run kept one; the last checkpoint's for a
run that has not finished) and wraps it with everything a prediction needs: the normalisation
statistics, the input size, the class names, and what the run's evaluation did to the logits
(flip test-time augmentation, post-hoc logit adjustment), so its predictions are the run's.

Its input is what an image file decodes to: uint8 ``(N, C, H, W)`` at the run's input size
(:meth:`InferenceModel.preprocess` makes that from files, PIL images or arrays of any size: the
shorter side scaled, the centre kept, as ``data.size`` does).

:func:`export_run` writes that model with ``torch.export`` (an ``ExportedProgram``, ``.pt2``):
a graph of ATen operators with the weights inside, which ``torch.export.load`` reads back with
PyTorch alone (no ncollapse, no Python class of ours). TorchScript would do as much, but
PyTorch has deprecated it in favour of ``torch.export``, which is also what the serving and
compiler stacks (ExecuTorch, AOTInductor) take.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .composition import compose
from .errors import UserError
from .rundir import Run

__all__ = [
    "EXPORT_META",
    "InferenceModel",
    "export_run",
    "image_files",
    "load_run",
    "predict_files",
]

#: the name of the JSON description stored inside an exported ``.pt2``
EXPORT_META = "ncollapse.json"


class InferenceModel(nn.Module):
    """A run's network in evaluation mode with its preprocessing: ``model(images)`` returns the
    logits the run's evaluation would argmax, for uint8 images ``(N, C, H, W)`` of
    :attr:`input_shape` (a float tensor is taken to hold values in [0, 1], as torchvision's
    ``ToTensor`` gives them).

    ``classes``: the class names, in label order; ``input_shape``: ``(C, H, W)``;
    :meth:`features` gives the vectors the classifier multiplies (for collapse metrics);
    :meth:`preprocess` and :meth:`predict` take image files, PIL images or arrays.
    """

    offset: Tensor | None
    scale: Tensor
    shift: Tensor

    def __init__(
        self,
        network: nn.Module,
        classes: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        input_shape: Sequence[int],
        *,
        tta: bool = False,
        logit_offset: Tensor | None = None,
        resize: str = "fit",
        size: int | None = None,
    ) -> None:
        super().__init__()
        self.network = network.eval()
        self.classes = list(classes)
        self.input_shape = tuple(int(v) for v in input_shape)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self.tta = bool(tta)
        self.resize = resize
        self.size = size
        m = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x/255 - m)/s computed as the run computed it: x * (1/(255 s)) - m/s
        self.register_buffer("scale", 1.0 / (255.0 * s))
        self.register_buffer("shift", m / s)
        self.register_buffer("offset", None if logit_offset is None else logit_offset.float())

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) images -> the network's normalised float32 input."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
        return x * self.scale - self.shift

    def forward(self, images: Tensor) -> Tensor:
        x = self.normalize(images)
        logits = self.network(x).logits.float()
        if self.tta:
            logits = 0.5 * (logits + self.network(x.flip(3)).logits.float())
        if self.offset is not None:
            logits = logits - self.offset
        return logits

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """The features the classifier multiplies (``HeadOutput.features``), float32."""
        return self.network(self.normalize(images)).features.float()

    def preprocess(self, images: Iterable[Any]) -> Tensor:
        """uint8 ``(N, C, H, W)`` at the input size from image paths, PIL images, or uint8
        arrays ``(H, W[, C])``: converted to the run's channels, the shorter side scaled and the
        centre kept (streamed runs: their evaluation crop)."""
        from PIL import Image

        out = []
        c, h, w = self.input_shape
        for item in images:
            if isinstance(item, (str, os.PathLike)):
                im = _open(Path(item))
            elif isinstance(item, Image.Image):
                im = item
            else:
                a = np.asarray(item.cpu() if isinstance(item, Tensor) else item)
                if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
                    a = a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
                im = Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a)
            im = im.convert("L" if c == 1 else "RGB")
            im = self._fit(im, w, h)
            a = np.array(im, dtype=np.uint8)  # a writable copy
            out.append(torch.from_numpy(a[:, :, None] if a.ndim == 2 else a))
        if not out:
            return torch.zeros((0, c, h, w), dtype=torch.uint8)
        return torch.stack(out).permute(0, 3, 1, 2).contiguous()

    def _fit(self, im: Any, w: int, h: int) -> Any:
        from PIL import Image

        from .data.resize import centre_box
        from .data.transforms import eval_resize_crop

        if self.resize == "eval_crop":
            return eval_resize_crop(im, w)
        if im.size == (w, h):
            return im
        sw, sh = im.size
        f = max(w / sw, h / sh)  # cover w x h, keep the aspect ratio, cut the centre
        nw, nh = max(w, int(sw * f + 0.5)), max(h, int(sh * f + 0.5))
        if (nw, nh) != (sw, sh):
            im = im.resize((nw, nh), Image.BILINEAR)
        return im.crop(centre_box(nw, nh, w, h)) if (nw, nh) != (w, h) else im

    @torch.no_grad()
    def predict(
        self, images: Iterable[Any], k: int = 5, batch_size: int = 256
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` highest-scoring classes of each image, as ``(class name, score)``; the
        score is the logit (for the ETF head: the cosine to the class's vertex, times the
        logit scale), not a probability."""
        self.eval()
        items, out = list(images), []
        k = max(1, min(int(k), len(self.classes)))
        device = self.scale.device
        for i in range(0, len(items), batch_size):
            x = self.preprocess(items[i : i + batch_size]).to(device)
            scores, idx = self(x).topk(k, dim=1)
            for srow, irow in zip(scores.tolist(), idx.tolist()):
                out.append([(self.classes[j], s) for j, s in zip(irow, srow)])
        return out


def _open(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise UserError(f"image {path} not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot decode image {path} ({type(exc).__name__}: {exc})") from None


def _weights(run: Run) -> tuple[dict[str, Tensor], str]:
    """The weights the run evaluates (``model.pt``), else those of its last checkpoint."""
    model = run.path / "model.pt"
    if model.is_file():
        try:
            return torch.load(model, map_location="cpu", weights_only=True), "final"
        except Exception as exc:  # damaged bytes fail in many ways
            raise UserError(
                f"{model} is damaged and cannot be read ({type(exc).__name__}); restore it, or "
                f"delete it and `ncollapse train --resume {run.path}` writes it again"
            ) from None
    if not run.checkpoint_path.is_file():
        raise UserError(
            f"{run.path} has neither model.pt nor checkpoint.pt: the run stopped before its first "
            "checkpoint, so there are no weights to use"
        )
    ckpt = run.load_checkpoint()
    ema = ckpt.get("ema")
    state = ema["module"] if ema and ema.get("updates", 0) > 0 else ckpt["model"]
    where = ckpt.get("position")
    when = (
        f"epoch {ckpt['epoch']}"
        if where is None
        else f"epoch {where['epoch'] + 1}, step {where['step']}"
    )
    warnings.warn(
        f"{run.path} has not finished: using the weights of its last checkpoint ({when})",
        stacklevel=3,
    )
    return state, f"checkpoint ({when})"


def load_run(run_dir: str | Path | Run, device: str | torch.device = "cpu") -> InferenceModel:
    """The network of the run in ``run_dir`` ready for inference (:class:`InferenceModel`:
    evaluation mode, its preprocessing, its class names).

    Reads the saved config and ``data.json``; data is loaded only for a run written before
    ``data.json`` recorded the normalisation statistics (it needs them from the data).
    """
    from .build import build_network
    from .losses import posthoc_logit_adjust

    run = Run.load(run_dir)
    cfg = compose(base=run.config_dict(), overrides={"run": {"progress": "none"}})
    data = run.data()
    classes = list(data.get("classes") or [])
    counts = list(data.get("class_counts") or [])
    pre = data.get("preprocess")
    if pre is None:  # written before data.json held it: the data it trained on says
        from .data import load_data

        bundle = load_data(cfg.data)
        pre = preprocess_record(bundle)
        classes, counts = list(bundle.classes), list(bundle.class_counts)
    state, which = _weights(run)
    network = build_network(cfg, len(counts), in_channels=int(pre["input"][0]))
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"the weights in {run.path} do not fit the network its config builds ({first})"
        ) from None
    offset = None
    if cfg.loss.posthoc_tau is not None:
        zero = torch.zeros(1, len(counts))
        offset = -posthoc_logit_adjust(zero, counts, cfg.loss.posthoc_tau)[0]
    model = InferenceModel(
        network,
        classes,
        pre["mean"],
        pre["std"],
        pre["input"],
        tta=bool(cfg.eval.tta),
        logit_offset=offset,
        resize=pre.get("resize", "fit"),
        size=pre.get("size"),
    )
    model.run_dir = run.path  # type: ignore[assignment]
    model.weights = which  # type: ignore[assignment]
    return model.to(device).eval()


def preprocess_record(bundle: Any) -> dict[str, Any]:
    """What ``data.json`` keeps for inference: the normalisation statistics and the input
    ``(C, H, W)``; ``resize``: ``fit`` (shorter side, centre) or ``eval_crop`` (streamed data's
    evaluation transform)."""
    streamed = not bundle.resident
    c, (h, w) = bundle.in_channels, bundle.image_size
    return {
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "input": [int(c), int(h), int(w)],
        "resize": "eval_crop" if streamed else "fit",
        "size": int(h) if streamed else None,
    }


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The images that ``paths`` name: image files as they are, every image under a folder (in
    name order), and the paths listed in a list file (one per line, a trailing label ignored,
    relative to the list's folder; ``#`` comments and blank lines skipped)."""
    from .data.imagefolder import IMAGE_EXTENSIONS

    out: list[Path] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
            )
            if not found:
                raise UserError(f"{p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            out += found
        elif not p.exists():
            raise UserError(f"{p} not found (give image files, folders or list files)")
        elif p.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(p)
        else:
            out += _listed(p)
    return out


def _listed(path: Path) -> list[Path]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is neither an image nor a readable list file ({type(exc).__name__})"
        ) from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        name = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
        f = Path(name).expanduser()
        if not f.is_absolute() and not f.exists():
            f = path.parent / f
        if not f.is_file():
            raise UserError(f"{path}, line {n}: {name} not found")
        out.append(f)
    if not out:
        raise UserError(f"{path} lists no images")
    return out


def predict_files(
    run_dir: str | Path, paths: Sequence[str | Path], k: int = 5, device: str = "cpu"
) -> list[dict[str, Any]]:
    """``ncollapse predict``: the top ``k`` classes of every image ``paths`` name
    (:func:`image_files`), one record per image: ``{"path", "top": [{"class", "index",
    "score"}, ...]}``."""
    model = load_run(run_dir, device)
    files = image_files(paths)
    index = {c: i for i, c in enumerate(model.classes)}
    out = []
    for f, top in zip(files, model.predict(files, k=k)):
        out.append(
            {"path": str(f), "top": [{"class": c, "index": index[c], "score": s} for c, s in top]}
        )
    return out


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's :class:`InferenceModel` as a ``torch.export`` program (default
    ``RUN_DIR/model.pt2``): input uint8 ``(N, C, H, W)`` at the run's input size, any ``N``;
    output the logits ``(N, K)``. The class names and the input description are stored in it
    as ``ncollapse.json`` (read back with ``torch.export.load(path, extra_files={"ncollapse.json":
    ""})``). Loading needs PyTorch only."""
    model = load_run(run_dir).cpu().eval()
    run = Run.load(run_dir)
    path = Path(out) if out is not None else run.path / "model.pt2"
    if path.exists() and path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file name such as model.pt2")
    c, h, w = model.input_shape
    example = torch.zeros((2, c, h, w), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    meta = {
        "classes": model.classes,
        "input": {"dtype": "uint8", "shape": ["N", c, h, w], "layout": "NCHW"},
        "output": "logits (N, K), the scores the run's evaluation argmaxes",
        "preprocess": (
            f"{'grey' if c == 1 else 'RGB'} image, shorter side scaled and the centre {w}x{h} kept"
            if model.resize == "fit"
            else f"shorter side to int({w} / 0.875), then the centre {w}x{h}"
        ),
        "normalisation": {"mean": model.mean, "std": model.std, "inside": True},
        "run": str(run.path),
        "weights": getattr(model, "weights", "final"),
        "format": "torch.export ExportedProgram; load with torch.export.load(path).module()",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")  # torch.export wants .pt2
    try:
        torch.export.save(program, tmp, extra_files={EXPORT_META: json.dumps(meta, indent=1)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
