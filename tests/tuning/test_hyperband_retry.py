"""BracketTaggingHyperBand on fake trials and a fake controller (no Ray cluster): a retried trial
stays in its bracket at the epoch it resumes from (the bracket must not halve while it retrains),
and no trial is left PAUSED in a bracket that nothing will process again (the study would hang)."""

from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

from tasks.tuning.ray_hooks import BracketTaggingHyperBand  # noqa: E402


class FakeTrial(SimpleNamespace):
    def __init__(self, tid):
        super().__init__(
            trial_id=tid, status="PENDING", last_result=None, latest_checkpoint_result=None, is_saving=False
        )

    def should_recover(self):
        return True

    def __hash__(self):
        return hash(self.trial_id)

    def __eq__(self, other):
        return self is other


class FakeController:
    """TuneController.stop_trial as far as the scheduler sees it: a PENDING/PAUSED trial is removed,
    a RUNNING one completes."""

    def __init__(self):
        self.stopped = []
        self.scheduler = None

    def stop_trial(self, trial):
        self.stopped.append(trial.trial_id)
        if trial.status in ("PENDING", "PAUSED"):
            self.scheduler.on_trial_remove(self, trial)
        elif trial.status == "RUNNING":
            self.scheduler.on_trial_complete(self, trial, trial.last_result or {})
        trial.status = "TERMINATED"


def result(epoch, acc):
    return {"epoch": epoch, "acc": acc}


def scheduler(names="abcde"):
    """max_t=3, eta=3 (bracket s=0: 2 trials to 3 epochs; s=1: 3 trials, 1 kept after epoch 1), a
    fake controller, and fake trials named by the letters of ``names`` (not yet added)."""
    sched = BracketTaggingHyperBand(time_attr="epoch", max_t=3, reduction_factor=3, metric="acc", mode="max")
    ctl = FakeController()
    ctl.scheduler = sched
    return sched, ctl, {k: FakeTrial(k) for k in names}


def study(checkpoint_epoch=None):
    """max_t=3, eta=3: bracket s=0 holds trials a, b (3 epochs); s=1 holds c, d, e (1 epoch, keep 1).
    c reports epoch 1 (worst of its bracket), pauses, is resumed... and fails; Tune retries it."""
    sched, ctl, trials = scheduler()
    for t in trials.values():
        sched.on_trial_add(ctl, t)
    c = trials["c"]
    assert sched._trial_info[c][0] is sched._trial_info[trials["d"]][0]  # c, d, e share bracket s=1
    c.status = "RUNNING"
    assert sched.on_trial_result(ctl, c, result(1, 0.1)) == "PAUSE"
    c.last_result = result(1, 0.1)
    if checkpoint_epoch is not None:
        c.latest_checkpoint_result = SimpleNamespace(metrics=result(checkpoint_epoch, 0.1))
    # The retry, as TuneController._requeue_trial does it: ERROR, on_trial_error, PENDING, on_trial_add.
    c.status = "ERROR"
    sched.on_trial_error(ctl, c)
    c.status = "PENDING"
    sched.on_trial_add(ctl, c)
    return sched, ctl, trials


def test_retried_trial_without_checkpoint_holds_back_the_halving_until_it_reports_again():
    sched, ctl, t = study(checkpoint_epoch=None)
    bracket = sched._trial_info[t["c"]][0]
    assert bracket._live_trials[t["c"]] is None  # back to the start: it retrains from scratch
    for k, acc in (("d", 0.5), ("e", 0.4)):
        t[k].status = "RUNNING"
        # Not halved yet (before the fix: halved on c's stale epoch-1 result while c was PENDING,
        # and Ray raised on the losing PENDING trial)
        assert sched.on_trial_result(ctl, t[k], result(1, acc)) == "PAUSE"
        t[k].status = "PAUSED"
    assert bracket._halves == 1 and ctl.stopped == []
    # c reaches epoch 1 again (same curve): now the bracket halves, keeps d, stops c (it is the
    # trial reporting) and e, as an uninterrupted study does.
    t["c"].status = "RUNNING"
    assert sched.on_trial_result(ctl, t["c"], result(1, 0.1)) == "STOP"
    assert ctl.stopped == ["e"] and bracket._halves == 0 and set(bracket._live_trials) == {t["d"]}


def test_retried_trial_at_its_milestone_waits_for_the_halving_like_a_paused_one():
    # c died after its epoch-1 checkpoint (the milestone) while being paused: it resumes from there,
    # but only once its bracket has halved, and it loses as it would have.
    sched, ctl, t = study(checkpoint_epoch=1)
    bracket = sched._trial_info[t["c"]][0]
    assert bracket._live_trials[t["c"]]["epoch"] == 1
    for k in "abe":
        t[k].status = "RUNNING"
    t["d"].status = "RUNNING"
    assert sched.on_trial_result(ctl, t["d"], result(1, 0.5)) == "PAUSE"
    t["d"].status = "PAUSED"
    assert sched.choose_trial_to_run(ctl) is None  # c (PENDING) is held, not run on to epoch 2
    # e reaches the milestone last: the bracket halves; c loses and is stopped though PENDING
    # (Ray 2.55.1 raised "unexpected bad status" on a PENDING loser).
    assert sched.on_trial_result(ctl, t["e"], result(1, 0.4)) == "STOP"
    assert ctl.stopped == ["c"] and bracket._halves == 0 and set(bracket._live_trials) == {t["d"]}


def test_held_winner_is_released_by_the_halving_and_a_bracket_of_held_trials_halves_by_itself():
    sched, ctl, t = study(checkpoint_epoch=1)
    bracket = sched._trial_info[t["c"]][0]
    t["c"].latest_checkpoint_result.metrics["acc"] = 0.9
    bracket._live_trials[t["c"]] = result(1, 0.9)  # c is the best of its bracket at epoch 1
    for k in "ab":
        t[k].status = "RUNNING"
    for k, acc in (("d", 0.5), ("e", 0.4)):
        t[k].status = "RUNNING"
        bracket.update_trial_stats(t[k], result(1, acc))
        t[k].status = "PAUSED"
    # Every live trial is at the milestone and nothing else will report: choosing the next trial
    # halves the bracket, stops d and e, and c (the winner) is the trial to run.
    assert sched.choose_trial_to_run(ctl) is t["c"]
    assert sorted(ctl.stopped) == ["d", "e"] and bracket._cumul_r == 3


def restored_bracket_s0():
    """a and b share bracket s=0 (3 epochs, no halving), as after a restore: both PENDING, a with
    its saved epoch-3 result (it was PAUSED at max_t, waiting for b, when the study was interrupted)."""
    sched, ctl, trials = scheduler()
    for t in trials.values():
        sched.on_trial_add(ctl, t)
    a, b = trials["a"], trials["b"]
    bracket = sched._trial_info[a][0]
    assert sched._trial_info[b][0] is bracket and bracket._halves == 0 and bracket._cumul_r == 3
    return sched, ctl, bracket, a, b


def test_a_finished_bracket_stops_a_trial_whose_pause_is_in_flight():
    sched, ctl, bracket, a, b = restored_bracket_s0()
    a.status = b.status = "RUNNING"
    assert sched.on_trial_result(ctl, b, result(1, 0.3)) == "CONTINUE"
    # a (resumed from its epoch-1 checkpoint) reaches max_t first and is paused: Tune saves its
    # checkpoint first, so it is still RUNNING (is_saving) when b reaches max_t.
    assert sched.on_trial_result(ctl, a, result(3, 0.6)) == "PAUSE"
    a.is_saving = True
    # b finishes the bracket: a is stopped with it (Ray stopped only PAUSED trials; a then became
    # PAUSED in a finished bracket and the study waited for it forever).
    assert sched.on_trial_result(ctl, b, result(3, 0.5)) == "STOP"
    assert ctl.stopped == ["a"] and a.status == "TERMINATED" and set(bracket._live_trials) == {b}


def test_a_bracket_left_with_only_paused_trials_is_finished_when_tune_asks_for_a_trial():
    sched, ctl, bracket, a, b = restored_bracket_s0()
    a.status = b.status = "RUNNING"
    assert sched.on_trial_result(ctl, a, result(3, 0.6)) == "PAUSE"
    a.status = "PAUSED"
    # b leaves the bracket without a result that processes it (here: cleaned up directly).
    bracket.cleanup_trial(b)
    b.status = "TERMINATED"
    # Tune asks for the next trial: bracket s=0 is finished (a stopped), and a PENDING trial of
    # bracket s=1 is the one to run.
    assert sched.choose_trial_to_run(ctl).trial_id in "cde"
    assert ctl.stopped == ["a"] and a.status == "TERMINATED" and not bracket._live_trials


def test_paused_trials_waiting_for_a_running_one_are_left_alone():
    sched, ctl, bracket, a, b = restored_bracket_s0()
    a.status = b.status = "RUNNING"
    assert sched.on_trial_result(ctl, a, result(3, 0.6)) == "PAUSE"
    a.status = "PAUSED"
    assert sched.on_trial_result(ctl, b, result(1, 0.3)) == "CONTINUE"
    assert not bracket.only_paused()
    sched.choose_trial_to_run(ctl)
    assert ctl.stopped == [] and a.status == "PAUSED"


def test_a_restored_trial_rejoins_its_bracket_at_its_checkpoint_not_at_its_last_result():
    # Bracket s=1 (c, d, e: 1 epoch, keep 1) as restored: c had reported epoch 1 but its checkpoint
    # was not saved (it retrains from scratch); d and e had not started.
    sched, ctl, t = scheduler()
    for k, s in zip("abcde", (0, 0, 1, 1, 1)):
        t[k].__dict__["_driftloop_hb"] = (0, s)
    t["c"].last_result = result(1, 0.9)
    for trial in t.values():
        sched.on_trial_add(ctl, trial)
    bracket = sched._trial_info[t["c"]][0]
    assert bracket._live_trials[t["c"]] is None and set(bracket._live_trials) == {t["c"], t["d"], t["e"]}
    for k in "cde":
        t[k].status = "RUNNING"
    for k, acc in (("d", 0.5), ("e", 0.4)):
        # Not halved while c retrains (before: halved at once on c's stale result, c was only dropped
        # from the bracket while it trained on, and d's CONTINUE overrode e's STOP).
        assert sched.on_trial_result(ctl, t[k], result(1, acc)) == "PAUSE"
        t[k].status = "PAUSED"
    assert bracket._halves == 1 and ctl.stopped == []
    assert sched.on_trial_result(ctl, t["c"], result(1, 0.9)) == "CONTINUE"  # c wins, as before
    assert sorted(ctl.stopped) == ["d", "e"] and set(bracket._live_trials) == {t["c"]}


def test_a_losing_trial_that_is_running_but_not_reporting_is_stopped_not_left_to_train_on():
    sched, ctl, t = scheduler()
    for trial in t.values():
        sched.on_trial_add(ctl, trial)
    bracket = sched._trial_info[t["c"]][0]
    for k, acc in (("c", 0.1), ("d", 0.5)):
        t[k].status = "RUNNING"
        bracket.update_trial_stats(t[k], result(1, acc))
    t["d"].status = "PAUSED"
    t["e"].status = "RUNNING"
    # e completes the rung; c (RUNNING: resumed from its checkpoint) and e lose, d wins.
    assert sched.on_trial_result(ctl, t["e"], result(1, 0.4)) == "STOP"
    assert ctl.stopped == ["c"] and t["c"].status == "TERMINATED" and set(bracket._live_trials) == {t["d"]}


@pytest.mark.parametrize("search_finished", [True, False])
def test_restored_trials_of_a_bracket_that_will_not_fill_halve_once_the_search_is_done(search_finished):
    # 4 samples: bracket s=1 (planned 3 trials, keep 1) only ever gets c and d. Both were PAUSED at its
    # milestone (checkpoints at epoch 1) when the study was interrupted; restored, both are PENDING.
    sched, ctl, t = scheduler("abcd")
    ctl.search_alg = SimpleNamespace(is_finished=lambda: search_finished)
    for k, s, acc in (("a", 0, None), ("b", 0, None), ("c", 1, 0.3), ("d", 1, 0.7)):
        t[k].__dict__["_driftloop_hb"] = (0, s)
        if acc is not None:
            t[k].last_result = result(1, acc)
            t[k].latest_checkpoint_result = SimpleNamespace(metrics=result(1, acc))
    for trial in t.values():
        sched.on_trial_add(ctl, trial)
    bracket = sched._trial_info[t["c"]][0]
    assert not bracket.filled() and bracket.cur_iter_done()
    for k in "ab":  # bracket s=0 is running
        t[k].status = "RUNNING"
    chosen = sched.choose_trial_to_run(ctl)
    if search_finished:  # the bracket halves as an uninterrupted one did: d goes on, c stops
        assert chosen is t["d"] and ctl.stopped == ["c"] and bracket._cumul_r == 3
    else:  # a third trial may still join: both wait at the milestone
        assert chosen is None and ctl.stopped == [] and bracket._cumul_r == 1
