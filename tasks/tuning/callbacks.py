"""Ray Tune callbacks for one ``fit`` of a study (added by ``tasks.tuning.study._add_session_callback``,
so they are never pickled into the experiment): the progress reporter, the interruption used by the
resume tests and benchmarks, and the stall guard. Imported only when a study runs."""

from __future__ import annotations

import math
import os
import signal
import time

from ray.tune import Callback
from ray.tune.experiment import Trial

from tasks.tuning.progress import Reporter, StudyProgress


class InterruptAfter(Callback):
    """Interrupts the study after ``after`` trials have ended, the way Ctrl+C does: Tune's SIGUSR1
    handler saves the experiment state and ``fit`` returns, leaving an unfinished experiment."""

    def __init__(self, after: int):
        self.after = after
        self.ended = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended += 1
        if self.ended == self.after:
            os.kill(os.getpid(), signal.SIGUSR1)


class ProgressCallback(Callback):
    """Counts trial events and calls ``reporter`` with a new :class:`StudyProgress` when a trial
    starts, pauses, finishes or reports a new best (at most every ``min_interval_s`` for results
    that change nothing else). A reporter that raises is dropped, with one warning: progress must
    never end a study."""

    def __init__(self, reporter: Reporter, total: int, max_t: int, metric: str, mode: str, min_interval_s: float = 1.0):
        self.reporter: Reporter | None = reporter
        self.total, self.max_t = total, max_t
        self.metric, self.sign = metric, (1.0 if mode == "max" else -1.0)
        self.min_interval_s = min_interval_s
        self.best: float | None = None
        self.epochs: dict[str, int] = {}
        self.ended: dict[str, str] = {}  # trial id -> "completed" | "stopped" | "error"
        self.t0 = time.monotonic()
        self._last = 0.0

    # Ray Tune hooks -------------------------------------------------------------------------

    def setup(self, **info):
        self.t0 = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._emit(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = result.get("epoch")
        if epoch is not None:
            self.epochs[trial.trial_id] = max(self.epochs.get(trial.trial_id, 0), int(epoch))
        # A report carries the epochs since the previous one (curve_<metric>): the best of them counts.
        values = result.get(f"curve_{self.metric}")
        if not isinstance(values, list):
            values = [result.get(self.metric)]
        new_best = False
        for value in values:
            if (
                isinstance(value, (int, float))
                and math.isfinite(value)
                and (self.best is None or self.sign * value > self.sign * self.best)
            ):
                self.best, new_best = float(value), True
        self._emit(trials, force=new_best)

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = self.epochs.get(trial.trial_id, 0) >= self.max_t
        self.ended[trial.trial_id] = "completed" if done else "stopped"
        self._emit(trials, force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = "error"
        self._emit(trials, force=True)

    def on_experiment_end(self, trials, **info):
        self._emit(trials, force=True)

    # ----------------------------------------------------------------------------------------

    def snapshot(self, trials) -> StudyProgress:
        # A trial that just ended may still show RUNNING: Tune sets its status after the callbacks.
        statuses = [t.status for t in trials if t.trial_id not in self.ended]
        return StudyProgress(
            total=max(self.total, len(trials)),
            finished=len(self.ended),
            running=statuses.count("RUNNING"),
            paused=statuses.count("PAUSED"),
            stopped_early=sum(v == "stopped" for v in self.ended.values()),
            errored=sum(v == "error" for v in self.ended.values()),
            epochs=sum(self.epochs.values()),
            best=self.best,
            metric=self.metric,
            elapsed_s=time.monotonic() - self.t0,
        )

    def _emit(self, trials, force: bool = False) -> None:
        now = time.monotonic()
        if self.reporter is None or (not force and now - self._last < self.min_interval_s):
            return
        self._last = now
        try:
            self.reporter(self.snapshot(trials))
        except Exception as e:  # a broken reporter must not stop the study
            import logging

            logging.getLogger("driftloop.tuning").warning("study progress reporting stopped: %s", e)
            self.reporter = None


class StallGuard(Callback):
    """Stops a trial that has gone silent, so that Tune retries it from its last checkpoint.

    A RUNNING trial that reports nothing for :meth:`limit` seconds (its worker is hung, or Ray
    reports its actor "temporarily unavailable" and never settles: the study would wait forever)
    has its actor killed (``ray.kill``); Tune sees the actor die and retries the trial from its
    checkpoint like any other failure (``tuning.max_failures``). The limit is
    ``tuning.trial_stall_s`` when set; else 10 times the slowest epoch seen so far in this session
    (at least ``floor_s``), and ``first_s`` before any epoch has been timed (the first epoch of a
    trial also pays for its worker's start). A trial reports only at some epochs
    (``next_report_epoch`` in its result): epochs are timed as the time between two reports over
    the epochs between them, and a trial's adaptive limit covers the epochs until its next report.
    A trial's silence is counted from when this guard first sees it RUNNING, so a resumed trial
    starts afresh.
    """

    def __init__(
        self,
        limit_s: float | None = None,
        floor_s: float = 120.0,
        factor: float = 10.0,
        first_s: float = 900.0,
        clock=time.monotonic,
    ):
        self.limit_s, self.floor_s, self.factor, self.first_s = limit_s, floor_s, factor, first_s
        self.clock = clock
        self.last: dict[str, float] = {}  # RUNNING trial id -> time of its last sign of life
        self.timed: set[str] = set()  # trials whose last result was not their first since start
        self.slowest = 0.0  # longest time per epoch between two results of one running trial
        self.epoch: dict[str, int] = {}  # trial id -> epoch of its last result
        self.span: dict[str, int] = {}  # trial id -> epochs until its next result
        self.stalled: list[tuple[str, float]] = []  # (trial id, seconds silent) of each trial stopped

    def limit(self, epochs: int = 1) -> float:
        """Seconds of silence allowed for a trial whose next result is ``epochs`` epochs away."""
        if self.limit_s is not None:
            return float(self.limit_s)
        if self.slowest <= 0.0:
            return self.first_s
        return max(self.floor_s, self.factor * self.slowest * max(1, epochs))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        now = self.clock()
        tid = trial.trial_id
        epoch = result.get("epoch")
        epochs = 1
        if isinstance(epoch, int) and tid in self.epoch:
            epochs = max(1, epoch - self.epoch[tid])
        if tid in self.last and tid in self.timed:
            self.slowest = max(self.slowest, (now - self.last[tid]) / epochs)
        self.last[tid] = now
        self.timed.add(tid)
        if isinstance(epoch, int):
            self.epoch[tid] = epoch
            nxt = result.get("next_report_epoch")
            self.span[tid] = max(1, int(nxt) - epoch) if isinstance(nxt, int) else 1

    def on_step_begin(self, iteration, trials, **info):
        now = self.clock()
        for trial in trials:
            tid = trial.trial_id
            if trial.status != Trial.RUNNING:
                self.last.pop(tid, None)
                self.timed.discard(tid)
                self.epoch.pop(tid, None)
                continue
            limit = self.limit(self.span.get(tid, 1))
            seen = self.last.setdefault(tid, now)
            if now - seen > limit:
                self._stop(trial, now - seen, limit)
                self.last[tid] = now  # once per silence: the kill shows up as an error, then a retry

    def _stop(self, trial, silent: float, limit: float) -> None:
        import logging

        import ray

        actor = getattr(trial.temporary_state, "ray_actor", None)
        logging.getLogger("driftloop.tuning").warning(
            "trial %s has reported nothing for %.0f s (limit %.0f s, tuning.trial_stall_s): stopping its "
            "worker; it is retried from its last checkpoint (tuning.max_failures)",
            trial.trial_id,
            silent,
            limit,
        )
        self.stalled.append((trial.trial_id, round(silent, 1)))
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as e:  # the actor may already be gone; Tune then reports it itself
                logging.getLogger("driftloop.tuning").warning("could not stop trial %s's worker: %s", trial.trial_id, e)
