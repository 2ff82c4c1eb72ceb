"""The stall guard's limit and bookkeeping, on a fake clock and fake trials (no Ray cluster)."""

from types import SimpleNamespace

import pytest

pytest.importorskip("ray.tune")

from tasks.tuning.callbacks import StallGuard  # noqa: E402


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def trial(tid, status="RUNNING"):
    return SimpleNamespace(trial_id=tid, status=status, temporary_state=SimpleNamespace(ray_actor=None))


def test_limit_is_generous_before_any_epoch_then_follows_the_slowest_epoch():
    clock = Clock()
    g = StallGuard(clock=clock, floor_s=120, factor=10, first_s=900)
    assert g.limit() == 900
    a = trial("a")
    g.on_step_begin(0, [a])
    clock.t = 50.0  # the first result also pays for the worker's start: not timed
    g.on_trial_result(0, [a], a, {})
    assert g.limit() == 900
    clock.t = 80.0  # a 30 s epoch
    g.on_trial_result(0, [a], a, {})
    assert g.slowest == pytest.approx(30.0) and g.limit() == pytest.approx(300.0)
    clock.t = 81.0  # a 1 s epoch does not lower the limit, and the floor holds
    g.on_trial_result(0, [a], a, {})
    assert g.limit() == pytest.approx(300.0)
    assert StallGuard(limit_s=7.5).limit() == 7.5


def test_only_a_silent_running_trial_is_stopped_once_per_silence():
    clock = Clock()
    g = StallGuard(limit_s=10, clock=clock)
    busy, silent, paused = trial("busy"), trial("silent"), trial("paused", "PAUSED")
    g.on_step_begin(0, [busy, silent, paused])
    for t in range(1, 12):
        clock.t = float(t)
        g.on_trial_result(0, [busy], busy, {})
        g.on_step_begin(t, [busy, silent, paused])
    assert [tid for tid, _ in g.stalled] == ["silent"] and g.stalled[0][1] == pytest.approx(11.0)
    clock.t = 15.0
    g.on_step_begin(20, [busy, silent, paused])
    assert len(g.stalled) == 1  # not stopped again before another full silence
    # A trial that pauses and resumes starts its silence afresh.
    silent.status = "PAUSED"
    g.on_step_begin(21, [silent])
    silent.status = "RUNNING"
    clock.t = 100.0
    g.on_step_begin(22, [silent])
    clock.t = 105.0
    g.on_step_begin(23, [silent])
    assert len(g.stalled) == 1


def test_a_trial_that_reports_every_few_epochs_is_timed_per_epoch_and_given_its_span():
    clock = Clock()
    g = StallGuard(clock=clock, floor_s=1, factor=10, first_s=900)
    a = trial("a")
    g.on_step_begin(0, [a])
    clock.t = 5.0
    g.on_trial_result(0, [a], a, {"epoch": 1, "next_report_epoch": 3})  # first result: not timed
    clock.t = 11.0
    g.on_trial_result(0, [a], a, {"epoch": 3, "next_report_epoch": 9})  # 2 epochs in 6 s
    assert g.slowest == pytest.approx(3.0) and g.span["a"] == 6
    # Its next report is 6 epochs away: 10 x 3 s x 6 epochs of silence are allowed, not 30 s.
    clock.t = 11.0 + 170.0
    g.on_step_begin(1, [a])
    assert g.stalled == []
    clock.t = 11.0 + 181.0
    g.on_step_begin(2, [a])
    assert [tid for tid, _ in g.stalled] == ["a"]
