"""Progress of a running study: what a reporter function receives (:class:`StudyProgress`) and the
live terminal line (:class:`TerminalLine`).

The Ray Tune callback that counts trials as they start, pause, finish and stop early is
``tasks.tuning.callbacks.ProgressCallback``; it calls the reporter after every change. Pure (no
prefect, no Ray): the tune stage's Prefect task injects a reporter that also updates a Prefect
progress artifact (``tasks.tuning.steps``). The callback is attached to the running Tuner only
(``tasks.tuning.study``), never pickled into the experiment, so a reporter may be any callable.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, TextIO


@dataclass(frozen=True)
class StudyProgress:
    """Where a study stands. ``finished`` counts trials that ended (reached max_t, were stopped
    early by the scheduler, or failed for good); ``stopped_early`` and ``errored`` are among them."""

    total: int
    finished: int
    running: int
    paused: int
    stopped_early: int
    errored: int
    epochs: int
    best: float | None
    metric: str
    elapsed_s: float

    @property
    def percent(self) -> float:
        return 100.0 * self.finished / self.total if self.total else 100.0

    def line(self) -> str:
        best = f"{self.best:.4f}" if self.best is not None else "-"
        return (
            f"tuning: {self.finished}/{self.total} trials finished ({self.stopped_early} stopped early"
            f"{f', {self.errored} failed' if self.errored else ''}), {self.running} running, "
            f"{self.paused} paused, {self.epochs} epochs, best {self.metric} {best}, {self.elapsed_s:.0f} s"
        )


Reporter = Callable[[StudyProgress], None]


class TerminalLine:
    """A reporter that keeps one live line on a terminal (carriage return), or prints a line per
    finished trial when the stream is not a terminal (logs, CI)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_finished = -1

    def __call__(self, p: StudyProgress) -> None:
        if self.tty:
            end = "\n" if p.finished >= p.total and p.running == 0 else ""
            self.stream.write("\r\033[K" + p.line() + end)
            self.stream.flush()
        elif p.finished != self._last_finished:
            self._last_finished = p.finished
            self.stream.write(p.line() + "\n")
            self.stream.flush()
