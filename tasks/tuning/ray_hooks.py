"""Small Ray Tune extensions used by ``tasks.tuning.search`` (imported only when a study runs, so
that the plan and the CLI do not import Ray).

Tune pickles the scheduler and callbacks into the experiment (``tuner.pkl``) and unpickles them on
``Tuner.restore``, so they live in an importable module.
"""

from __future__ import annotations

import math

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.logger import TBXLoggerCallback
from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler
from ray.tune.schedulers.hyperband import _Bracket


class _PlanBracket(_Bracket):
    """Ray's bracket, "filled" once it has held its planned number of trials (Ray counts only the
    live ones, so a trial ending early would let a later trial into the same bracket)."""

    def filled(self) -> bool:
        return len(self._all_trials) >= self._n0

    def cleanup_full(self, tune_controller) -> None:
        # Ray stops only the PAUSED trials of a finished bracket. A trial whose PAUSE is still in
        # flight (Tune saves its checkpoint first: RUNNING, is_saving) becomes PAUSED afterwards,
        # in a bracket nothing will process again, and the study waits for it forever (seen
        # after a restore, when a trial paused at max_t while the last one reached it). Ray's
        # halving stops such a trial too.
        for trial in self.current_trials():
            if trial.status == Trial.PAUSED or trial.is_saving:
                tune_controller.stop_trial(trial)

    def only_paused(self) -> bool:
        """Every live trial is PAUSED (none being saved, none to be resumed): none will report."""
        live = self.current_trials()
        return bool(live) and all(
            t.status == Trial.PAUSED and not t.is_saving and t not in self.trials_to_unpause for t in live
        )


def _tag_of(trial):
    """(band, s) of a trial restored from a saved experiment: from its last result, else from the
    tag saved with the trial itself (Tune saves a Trial's ``__dict__`` in the experiment state, so
    a trial placed but not yet run when the study was interrupted has one too); None for a new trial."""
    r = trial.last_result
    if r and r.get("hb_bracket") is not None and r.get("hb_band") is not None:
        return int(r["hb_band"]), int(r["hb_bracket"])
    saved = trial.__dict__.get("_driftloop_hb")
    if isinstance(saved, (list, tuple)) and len(saved) == 2:
        return int(saved[0]), int(saved[1])
    return None


def _search_finished(tune_controller) -> bool:
    """No more trials will be added (a bracket that is not filled yet will stay as it is)."""
    search_alg = getattr(tune_controller, "search_alg", None)
    return bool(search_alg is not None and search_alg.is_finished())


class BracketTaggingHyperBand(HyperBandScheduler):
    """Ray's synchronous HyperBandScheduler (ray 2.55.1) made safe to pause, retry and restore.

    * Notes each trial's (band, bracket s) on the Trial (``BracketTagger`` copies it into results).
    * A trial restored by ``Tuner.restore`` (its last result, or its saved state, carries its tag)
      goes back into its own bracket, also one that had not run yet; Ray would place it as a new trial, and would put
      finished trials back into
      brackets as live ones, which then never complete (the restored study hangs).
    * A trial retried after an error (``FailureConfig``; e.g. its worker process died, or its
      node was lost) keeps its place in its bracket, at the epoch of the checkpoint it resumes from. Ray removes it
      from the bracket and adds it again as a new trial, in
      whichever bracket is being filled, often a new band: it would then run to another budget
      than in an uninterrupted run (and last, after every other trial), and its old bracket would
      halve without it. Kept in place, it resumes from its checkpoint and the study makes the same
      decisions as an uninterrupted one.
    * Finished trials stay in their bracket's count but not among its live trials.
    * After a restore, a bracket whose halvings had happened before the interruption is brought
      forward to its current rung (the scheduler's own state is not saved by Tune).
    * A trial removed (error, stop) that finishes its bracket stops the bracket's PAUSED trials
      (Ray 2.55.1 leaves them paused: the study hangs when a retried trial leaves its bracket).
    * A finished bracket also stops a trial whose PAUSE is still in flight (Ray only stops the
      PAUSED ones: the other would wait forever), and a bracket whose live trials are all PAUSED
      at its milestone with nothing left to report is processed when Tune next asks for a trial.
    * A trial stopped while PAUSED is marked for the next experiment snapshot: Tune 2.55.1 would
      otherwise save it as PAUSED, and a restore would run it again.
    """

    def _create_bracket(self, s):
        return _PlanBracket(
            time_attr=self._time_attr,
            max_trials=self._get_n0(s),
            init_t_attr=self._get_r0(s),
            max_t_attr=self._max_t_attr,
            eta=self._eta,
            s=s,
            stop_last_trials=self._stop_last_trials,
        )

    def _bracket_at(self, band: int, s: int):
        while len(self._hyperbands) <= band:
            self._hyperbands.append([])
        brackets = self._hyperbands[band]
        while len(brackets) <= s:
            k = len(brackets)
            brackets.append(self._create_bracket(k) if self._get_r0(k) > 0 else None)
        if (band, s) >= (self._band_idx(), self._bracket_index(self._state["bracket"])):
            self._state.update(band_idx=band, bracket=brackets[s])
        return brackets[s]

    def _bracket_index(self, bracket) -> int:
        if bracket is None:
            return -1
        band = self._hyperbands[self._band_idx()]
        return band.index(bracket) if bracket in band else -1

    def _band_idx(self) -> int:
        # Ray initialises its state as {"bracket": None, "band_idx": 0}: mypy infers int | None.
        band_idx = self._state["band_idx"]
        assert band_idx is not None, "Ray's HyperBandScheduler always holds a band index"
        return band_idx

    def on_trial_add(self, tune_controller, trial):
        if not self._metric or not self._metric_op:
            return super().on_trial_add(tune_controller, trial)  # raises Ray's own error
        if trial.__dict__.pop("_driftloop_retry", False):
            return  # a retried trial: still in its bracket, with its last result (on_trial_error)
        # Trials restored from a saved experiment (unknown to this scheduler, which Tune does not
        # save) go back to the bracket they were in; new trials are placed by Ray.
        tag = None if trial in self._trial_info else _tag_of(trial)
        if tag is None:
            super().on_trial_add(tune_controller, trial)
            bracket, band = self._trial_info[trial]
            tag = (int(band), int(self._hyperbands[band].index(bracket)))
        else:
            bracket = self._bracket_at(*tag)
            if trial not in bracket._all_trials:
                bracket._all_trials.append(trial)
            # An unfinished trial resumes from its latest checkpoint and reports again from there:
            # that is its place in the bracket, as for a retry (on_trial_error). At its last result
            # it would count as at the milestone while it retrains (Ray then drops it from the
            # halving as if it were the reporting trial, and it trains on past the milestone).
            ckpt = trial.latest_checkpoint_result
            metrics = dict(ckpt.metrics) if ckpt is not None and ckpt.metrics else None
            bracket._live_trials[trial] = metrics if metrics and self._time_attr in metrics else None
            if trial.status not in (Trial.TERMINATED, Trial.ERROR):
                trial.__dict__["_driftloop_hold"] = True  # at the milestone: waits for the halving
            self._trial_info[trial] = (bracket, tag[0])
        trial.__dict__["_driftloop_hb"] = tag
        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            bracket.cleanup_trial(trial)

    def _held(self, trial, bracket) -> bool:
        """A retried trial whose checkpoint is at its bracket's current milestone: it waits for the
        halving, as the PAUSED trial it would have been in an uninterrupted run (Ray would run it
        on, and compare it on a later epoch's result)."""
        return (
            trial.status == Trial.PENDING
            and trial.__dict__.get("_driftloop_hold", False)
            and bracket._halves > 0
            and trial in bracket._live_trials
            and not bracket.continue_trial(trial)
        )

    def choose_trial_to_run(self, tune_controller):
        for band in self._hyperbands:
            for bracket in [b for b in band if b is not None]:
                # Every live trial is at the milestone but the one that would have halved the
                # bracket is a held retry, or every one is PAUSED there and nothing is left to
                # report (a trial left the bracket without processing it): halve or finish now.
                held = any(self._held(t, bracket) for t in bracket.current_trials())
                if (
                    (held or bracket.only_paused())
                    and bracket.cur_iter_done()
                    and (bracket.filled() or _search_finished(tune_controller))
                ):
                    self._process_bracket(tune_controller, bracket)
        # Ray's choice (HyperBandScheduler.choose_trial_to_run, ray 2.55.1), held trials left out.
        for band in self._hyperbands:
            for bracket in sorted([b for b in band if b is not None], key=lambda b: b.completion_percentage()):
                for trial in bracket.current_trials():
                    if (trial.status == Trial.PAUSED and trial in bracket.trials_to_unpause) or (
                        trial.status == Trial.PENDING and not self._held(trial, bracket)
                    ):
                        return trial
        return None

    def _process_bracket(self, tune_controller, bracket) -> str:
        # Ray's HyperBandScheduler._process_bracket (ray 2.55.1), except that a losing trial that is
        # PENDING (a held retry) is stopped like a PAUSED one; Ray raises "unexpected bad status".
        from ray.tune.schedulers import TrialScheduler

        action = TrialScheduler.PAUSE
        if bracket.cur_iter_done():
            if bracket.finished():
                bracket.cleanup_full(tune_controller)
                return TrialScheduler.STOP
            bracket.is_being_processed = True
            good, bad = bracket.successive_halving(self._metric, self._metric_op)
            self._num_stopped += len(bad)
            for t in bad:
                if t.status in (Trial.PAUSED, Trial.PENDING) or t.is_saving or self._other_running(t):
                    tune_controller.stop_trial(t)
                elif t.status == Trial.RUNNING:
                    bracket.cleanup_trial(t)
                    action = TrialScheduler.STOP
                else:
                    from ray.tune.error import TuneError

                    raise TuneError(f"Trial with unexpected bad status encountered: {t} is {t.status}")
            for t in good:
                if t not in bracket._live_trials:
                    # Left the bracket while the bad ones were stopped (a removal that finishes the
                    # bracket stops its paused trials, see on_trial_remove): already handled.
                    continue
                if bracket.continue_trial(t):
                    if t.status == Trial.PAUSED or t.is_saving:
                        self._unpause_trial(tune_controller, t)
                        bracket.trials_to_unpause.add(t)
                    elif t.status == Trial.RUNNING and not self._other_running(t):
                        action = TrialScheduler.CONTINUE
                elif bracket.finished() and bracket.stop_last_trials:
                    if t.status == Trial.PAUSED or t.is_saving or self._other_running(t):
                        tune_controller.stop_trial(t)
                    elif t.status == Trial.RUNNING:
                        bracket.cleanup_trial(t)
                        action = TrialScheduler.STOP
        return action

    def _other_running(self, trial) -> bool:
        """A RUNNING trial that is not the one reporting. Ray assumes there is none when a bracket
        is processed (the others are PAUSED at the milestone), but a trial resumed by a restore or a
        retry runs from its checkpoint while the bracket halves: Ray would only drop a loser from
        the bracket (it trains on, to max_t) and let a winner's CONTINUE override the reporting
        trial's decision. It is stopped, or left to run, like any other trial."""
        return trial.status == Trial.RUNNING and trial is not getattr(self, "_reporting", None)

    def _catch_up(self, bracket) -> None:
        # Halvings that had happened before a restore: every live trial is past the milestone and
        # no more of them are left than the halving keeps. (Never true in an uninterrupted run:
        # after a halving the live trials are below the new milestone.)
        while (
            bracket._halves > 0
            and bracket._live_trials
            and all(r is not None and r[self._time_attr] >= bracket._cumul_r for r in bracket._live_trials.values())
            and len(bracket._live_trials) <= math.ceil(bracket._n / self._eta)
        ):
            bracket._halves -= 1
            bracket._n = int(math.ceil(bracket._n / self._eta))
            bracket._r = int(min(bracket._r * self._eta, self._max_t_attr))
            bracket._cumul_r = bracket._r

    def on_trial_result(self, tune_controller, trial, result):
        trial.__dict__.pop("_driftloop_hold", None)
        bracket = self._trial_info[trial][0]
        if trial not in bracket._live_trials and trial.status == Trial.RUNNING:
            # A running trial its bracket had already cleaned up (seen after a restore: Tune re-runs a
            # trial its snapshot held as unfinished): it is live again, or Ray 2.55.1 asserts.
            bracket._live_trials[trial] = None
        self._catch_up(bracket)
        self._reporting = trial  # the RUNNING trial whose decision _process_bracket returns
        try:
            return super().on_trial_result(tune_controller, trial, result)
        finally:
            self._reporting = None

    def on_trial_error(self, tune_controller, trial):
        # Ray calls this for a trial it is about to retry (TuneController._requeue_trial: the trial
        # is already ERROR and should_recover()) and for one that failed for good (still RUNNING or
        # PENDING). Only the latter leaves its bracket; the retry's on_trial_add keeps it in place.
        if trial.status == Trial.ERROR and trial.should_recover() and trial in self._trial_info:
            trial.__dict__["_driftloop_retry"] = True
            # Its place in the bracket goes back to where the retry starts from: the result of the
            # checkpoint Tune restores (none: from scratch). Kept at its last result, the bracket
            # would count it as having reached the milestone and halve while it is retraining;
            # Ray then only drops a losing RUNNING trial from the bracket (it trains on to max_t:
            # seen after a node loss) and raises on a losing PENDING one.
            bracket = self._trial_info[trial][0]
            if trial in bracket._live_trials:
                ckpt = trial.latest_checkpoint_result
                metrics = dict(ckpt.metrics) if ckpt is not None and ckpt.metrics else None
                bracket._live_trials[trial] = metrics if metrics and self._time_attr in metrics else None
                trial.__dict__["_driftloop_hold"] = True
            return
        super().on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial):
        bracket = self._trial_info[trial][0] if trial in self._trial_info else None
        super().on_trial_remove(tune_controller, trial)
        # Ray skips a bracket that the removal itself finished (an errored trial was the last one
        # below max_t): trials PAUSED at max_t would wait forever. Stop them, as a finished
        # bracket does.
        if bracket is not None and bracket.finished() and hasattr(tune_controller, "stop_trial"):
            bracket.cleanup_full(tune_controller)
        mark = getattr(tune_controller, "_mark_trial_to_checkpoint", None)
        if mark is not None:
            mark(trial)


class NoTBXLogger(TBXLoggerCallback):
    """Stands in for Tune's default TensorBoard logger (an event file per trial, written at every
    result) and writes nothing: driftloop's reports and the Prefect artifacts show the curves."""

    def __init__(self):  # noqa: D107  (does not need tensorboardX)
        Callback.__init__(self)

    def log_trial_start(self, trial):
        pass

    def log_trial_result(self, iteration, trial, result):
        pass

    def log_trial_end(self, trial, failed=False):
        pass


class BracketTagger(Callback):
    """Adds ``hb_band`` / ``hb_bracket`` to every result of a trial the Hyperband scheduler placed."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tag = trial.__dict__.get("_driftloop_hb")
        if tag is not None:
            result["hb_band"], result["hb_bracket"] = tag


class SnapshotSafeBOHB(HyperBandForBOHB):
    """Ray's HyperBandForBOHB (ray 2.55.1) with one fix shared with :class:`BracketTaggingHyperBand`:
    a trial stopped while PAUSED (its bracket finished without it) is marked for the next experiment
    snapshot, which Tune 2.55.1 would otherwise save as PAUSED: the study then reads as
    interrupted, and a restore would run the trial again."""

    def on_trial_remove(self, tune_controller, trial):
        super().on_trial_remove(tune_controller, trial)
        mark = getattr(tune_controller, "_mark_trial_to_checkpoint", None)
        if mark is not None:
            mark(trial)
