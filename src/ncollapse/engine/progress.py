"""A one-line progress display: epoch, batch, loss, throughput and ETA.

``bar`` redraws one terminal line; ``log`` prints one line per epoch (for files and CI logs);
``none`` is silent; ``auto`` picks ``bar`` on a terminal and ``log`` otherwise.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..config import Config

#: the values of ``run.progress``
PROGRESS_MODES = ("auto", "bar", "log", "none")
Config.set_choices("run.progress", PROGRESS_MODES)


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Tracks one run's progress and prints it in the chosen ``mode``."""

    def __init__(
        self, total_epochs: int, mode: str = "auto", stream: TextIO | None = None, prefix: str = ""
    ) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode = mode
        self.total_epochs = total_epochs
        self.prefix = prefix
        self._epoch_times: list[float] = []  # whole epochs: training, evaluation, checkpoint
        self._last_epoch_end: float | None = None
        self._last_draw = 0.0

    def start(self) -> None:
        """The clock of the first epoch starts now (training starts or resumes)."""
        self._last_epoch_end = time.perf_counter()

    def batch(
        self,
        epoch: int,
        done: int,
        total: int,
        loss: float,
        images_per_s: float,
        epoch_elapsed: float,
    ) -> None:
        """Report progress inside epoch ``epoch`` (0-based): ``done`` of ``total`` batches."""
        if self.mode != "bar":
            return
        now = time.perf_counter()
        if now - self._last_draw < 0.2 and done < total:
            return
        self._last_draw = now
        per_epoch = epoch_elapsed / max(done, 1) * total
        remaining = per_epoch - epoch_elapsed + per_epoch * (self.total_epochs - epoch - 1)
        width = 20
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r{self.prefix}epoch {epoch + 1}/{self.total_epochs} [{bar}] {done}/{total} "
            f"loss {loss:.4f} {images_per_s:,.0f} img/s ETA {_fmt_time(remaining)}  "
        )
        self.stream.flush()

    def epoch(self, epoch: int, seconds: float, summary: str) -> None:
        """Report the end of epoch ``epoch`` (0-based) with a short summary string; ``seconds``
        is the epoch's training time. The ETA goes by whole epochs as the clock saw them
        (training and the evaluation, collapse metrics and checkpoint after it: a test set
        measured every epoch can take as long as the training), counted from :meth:`start`
        (or, without it, by the first epoch's training time)."""
        now = time.perf_counter()
        whole = seconds if self._last_epoch_end is None else now - self._last_epoch_end
        whole = max(whole, seconds)  # an epoch resumed midway: its training began before the stop
        self._last_epoch_end = now
        self._epoch_times.append(whole)
        if self.mode == "none":
            return
        recent = self._epoch_times[-5:]
        eta = sum(recent) / len(recent) * (self.total_epochs - epoch - 1)
        line = (
            f"{self.prefix}epoch {epoch + 1}/{self.total_epochs} {summary} "
            f"({seconds:.1f}s training, {whole:.1f}s in all, ETA {_fmt_time(eta)})"
        )
        if self.mode == "bar":
            self.stream.write("\r" + line + " " * 10 + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.mode != "none":
            self.stream.write(f"{self.prefix}{text}\n")
            self.stream.flush()
