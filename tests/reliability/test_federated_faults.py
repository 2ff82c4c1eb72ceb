"""Federated scenarios through the real Flower simulation engine (subprocess + Ray), 10 clients:

- 20% of the clients crash in every round (a different 2 each round): training completes and the
  final test accuracy stays within 1 point of the clean run;
- 2 of 10 clients send poisoned updates: FedAvg degrades by a clear margin, while FedMedian, the
  robust aggregator the project recommends (README, benchmarks/robust_aggregation.py: clean FedAvg
  0.895, poisoned FedAvg 0.783, poisoned FedMedian 0.901), stays within 2 points of the clean run.

The four runs (clean, crashing, poisoned FedAvg, poisoned FedMedian) go through
``run_simulations``: the same ServerApp/ClientApp code, work dirs and results as ``run_federated``,
run one after another in ONE simulation subprocess (one start-up instead of four). The clean run
is shared by both scenarios (module-scoped fixture).

Set-up, chosen so the clean run is converged and the comparisons measure the fault, not noise:
- IID partition: losing 2 random clients in a round then drops no label from that round, so the
  crash comparison measures the fault handling rather than label skew; and FedMedian's guarantee
  assumes the honest updates cluster, which IID gives (the benchmark uses IID too).
- 4 rounds of E=6 local epochs (B=32, Adam lr 8e-3) on a 1x128 MLP: clients hold ~108 samples, so
  a round costs about a second of training on 2 cores, and the model reaches ~0.95 test accuracy in
  4 rounds. Chosen by replaying the same maths in-process (Flower's strategy objects, the
  ClientApp's ``client_update``) over 8 seeds: crash run minus clean run had a standard deviation
  of 0.3 points (max 0.6), poisoned FedMedian minus clean at most 0.7 points, poisoned FedAvg at
  least 13.7 points below clean. (E=10 at lr 5e-3 cost more and was noisier: sd 0.4, max 0.9.)
- The test split is 30% of digits (540 images; one image = 0.19 points), so the 1-point bound is
  5 images rather than 2.7, and a single borderline image cannot decide the test.
- The attacks are the benchmark's: client 0 sends a sign-flipped update ``w - 10 d``, client 1 a
  boosted one ``w + 10 d`` (``poison_update``). Both replies are finite and well-shaped, so the
  reply filter accepts them: only the aggregator can resist them.
"""

from __future__ import annotations

import re

import pytest

from tasks.data.sources import load_digits_dataset, split_dataset
from tasks.federated.engine import run_simulations
from tasks.federated.faults import Fault
from tasks.seeding import rng
from tasks.settings import load_settings

pytestmark = pytest.mark.slow

CLIENTS, ROUNDS, CRASHES_PER_ROUND = 10, 4, 2
ROBUST = "fedmedian"
POISON = [Fault(client=0, kind="sign_flip", factor=10.0), Fault(client=1, kind="scale", factor=10.0)]
# Poisoned FedAvg must lose more than this against the clean run (measured: at least 13.7 points
# in-process over 8 seeds; the figures record this seed's drop).
FEDAVG_MIN_DROP = 0.05


def fed_settings(**federated):
    base = {
        "num_clients": CLIENTS,
        "rounds": ROUNDS,
        "fraction_fit": 1.0,
        # a round needs the 8 clients left when 2 crash: a ninth failure would fail the run loudly
        "min_fit_clients": CLIENTS - CRASHES_PER_ROUND,
        "partition": "iid",
        "local_epochs": 6,
        "batch_size": 32,
        "round_timeout_s": 60.0,
        "strategy": "fedavg",
        "client_lr": None,
        "client_lr_scale": 1.0,
    }
    base.update(federated)
    return load_settings(
        profile="smoke",
        environ={},
        overrides={
            "model": {"arch": "mlp", "width": 128, "depth": 1, "dropout": 0.0},
            "training": {"lr": 0.008, "optimizer": "adam", "num_threads": 1},
            "federated": base,
        },
    )


def crash_schedule(seed: int) -> dict[int, list[int]]:
    """Round -> the clients that crash in it: consecutive pairs of one seeded permutation, so every
    round loses a different 20% (with 4 rounds, 8 distinct clients crash once each)."""
    perm = rng(seed, "reliability", "federated", "crash").permutation(CLIENTS).tolist()
    return {
        r: sorted(perm[(CRASHES_PER_ROUND * (r - 1) + k) % CLIENTS] for k in range(CRASHES_PER_ROUND))
        for r in range(1, ROUNDS + 1)
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The clean run and three faulty ones, in one simulation subprocess."""
    splits = split_dataset(load_digits_dataset(), 7, 0.1, 0.3)
    clean = fed_settings()
    schedule = crash_schedule(clean.seed)
    crashes = [Fault(client=c, kind="crash", rounds=[r]) for r, cs in schedule.items() for c in cs]
    names = ["clean", "crash", "fedavg_poisoned", "robust_poisoned"]
    results = run_simulations(
        [(clean, []), (clean, crashes), (clean, POISON), (fed_settings(strategy=ROBUST), POISON)],
        splits,
        workdir=tmp_path_factory.mktemp("fed-faults"),
    )
    return {"schedule": schedule, "crashes": crashes, "test_size": len(splits.test.y), **dict(zip(names, results))}


def _final(res) -> float:
    return float(res.rounds[-1]["test_accuracy"])


def _rejected(res) -> int:
    return sum(len(r["failures"]) for r in res.rounds[1:])


def _objects_lost(*results) -> int:
    """Per-round checkpoints (and final weights) a completed run should have returned but did not."""
    return sum(ROUNDS - len(res.checkpoints) + (0 if res.state_dict else 1) for res in results)


def test_twenty_percent_of_clients_crashing_every_round_stays_within_one_point(runs, figures):
    clean, crash, schedule = runs["clean"], runs["crash"], runs["schedule"]
    figures.update(
        clients=CLIENTS,
        rounds=ROUNDS,
        strategy="fedavg",
        partition="iid",
        test_size=runs["test_size"],
        crash_schedule={str(r): cs for r, cs in schedule.items()},
        faults_injected=len(runs["crashes"]),
        rounds_completed=len(crash.rounds) - 1,
        replies_rejected=_rejected(crash),
        accuracy_clean=_final(clean),
        accuracy_faulty=_final(crash),
        delta_points=round(100 * (_final(crash) - _final(clean)), 2),
        runs_completed=2,
        objects_lost=_objects_lost(clean, crash),
    )

    # a different 20% of the clients in every round
    assert all(len(cs) == CRASHES_PER_ROUND for cs in schedule.values())
    assert len({tuple(cs) for cs in schedule.values()}) == ROUNDS
    # the clean run learned; every round of both runs completed
    assert _final(clean) > 0.9 and [r["round"] for r in clean.rounds] == list(range(ROUNDS + 1))
    assert [r["round"] for r in crash.rounds] == list(range(ROUNDS + 1)) and sorted(crash.checkpoints) == [1, 2, 3, 4]
    assert _rejected(clean) == 0
    for r in crash.rounds[1:]:
        crashed = schedule[r["round"]]
        # exactly the scheduled clients failed, with the injected error; the other 8 were averaged
        assert r["participants"] == [c for c in range(CLIENTS) if c not in crashed]
        # the error reply names the client; the failure record does too once the client has
        # replied successfully before (the node -> partition map is learned from good replies)
        named = [re.search(r"injected crash of client (\d+)", f["reason"]) for f in r["failures"]]
        assert all(named) and sorted(int(m.group(1)) for m in named) == crashed
        assert all(f["client"] in (None, int(m.group(1))) for f, m in zip(r["failures"], named))
    assert _rejected(crash) == CRASHES_PER_ROUND * ROUNDS
    assert abs(_final(crash) - _final(clean)) <= 0.01, figures


def test_poisoned_clients_degrade_fedavg_but_not_the_robust_aggregator(runs, figures):
    clean, avg, rob = runs["clean"], runs["fedavg_poisoned"], runs["robust_poisoned"]
    figures.update(
        clients=CLIENTS,
        rounds=ROUNDS,
        partition="iid",
        test_size=runs["test_size"],
        robust_aggregator=ROBUST,
        attacks=[f"client {f.client}: {f.kind} x{f.factor:g}" for f in POISON],
        faults_injected=len(POISON),
        rounds_completed=min(len(avg.rounds), len(rob.rounds)) - 1,
        replies_rejected=_rejected(avg) + _rejected(rob),
        accuracy_clean=_final(clean),
        accuracy_fedavg_poisoned=_final(avg),
        accuracy_robust_poisoned=_final(rob),
        accuracy_faulty=_final(rob),
        delta_points_fedavg=round(100 * (_final(avg) - _final(clean)), 2),
        delta_points=round(100 * (_final(rob) - _final(clean)), 2),
        runs_completed=3,
        objects_lost=_objects_lost(clean, avg, rob),
    )

    assert avg.strategy == "fedavg" and rob.strategy == ROBUST
    for res in (avg, rob):
        assert [r["round"] for r in res.rounds] == list(range(ROUNDS + 1))
        # the poisoned replies are finite and well-shaped: accepted by the reply filter, every round
        assert all(r["participants"] == list(range(CLIENTS)) and not r["failures"] for r in res.rounds[1:])
    assert _final(avg) < _final(clean) - FEDAVG_MIN_DROP, figures
    assert abs(_final(rob) - _final(clean)) <= 0.02, figures
