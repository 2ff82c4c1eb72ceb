"""Aggregation maths on hand-computed examples, through the real Flower strategy objects, and the
reply filter (NaN / shape rejection, too few replies)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from torch import nn

from tasks.federated.algorithms import client_update, poison_update, proximal_hook, weighted_average
from tasks.federated.config import FederatedConfig
from tasks.federated.strategies import RoundFailed, build_strategy, screen_reply


class FakeGrid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def _round(strategy, global_arrays, client_arrays, counts, server_round=1, reverse=False):
    """Configure a round on a fake grid, answer each instruction with the given arrays (replies in
    node order, or the reverse)."""
    ins = list(
        strategy.configure_train(
            server_round,
            ArrayRecord({k: Array(v) for k, v in global_arrays.items()}),
            ConfigRecord(),
            FakeGrid(len(client_arrays)),
        )
    )
    ins.sort(key=lambda m: m.metadata.dst_node_id)
    replies = []
    for i, (m, arrs, n) in enumerate(zip(ins, client_arrays, counts)):
        if arrs is None:
            continue  # this client never answers
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrs.items()}),
                "metrics": MetricRecord({"train_loss": float(i), "num-examples": n, "partition-id": i}),
            }
        )
        replies.append(Message(content=content, reply_to=m))
    return strategy.aggregate_train(server_round, replies[::-1] if reverse else replies)


def cfg(**kw):
    base = dict(num_clients=3, min_fit_clients=2, fraction_fit=1.0)
    base.update(kw)
    return FederatedConfig(**base)


G = {"w": np.zeros((2,), np.float32)}


def test_fedavg_weights_by_example_count():
    s = build_strategy(cfg())
    arrays, metrics = _round(s, G, [{"w": [1.0, 0.0]}, {"w": [0.0, 2.0]}, {"w": [4.0, 4.0]}], [10, 30, 60])
    # (10*[1,0] + 30*[0,2] + 60*[4,4]) / 100 = [2.5, 3.0]
    np.testing.assert_allclose(arrays["w"].numpy(), [2.5, 3.0], rtol=1e-6)
    # train_loss weighted the same way: (10*0 + 30*1 + 60*2)/100 = 1.5; the client id is not averaged
    assert metrics["train_loss"] == pytest.approx(1.5) and "partition-id" not in metrics
    assert s.round_log[1]["participants"] == [0, 1, 2] and s.round_log[1]["train_loss"] == pytest.approx(1.5)


def test_weighted_average_function_matches():
    out = weighted_average(
        [{"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 4.0])}],
        [10, 30, 60],
    )
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 3.0]))
    with pytest.raises(ValueError):
        weighted_average([{"w": torch.zeros(1)}], [0])


def test_median_and_trimmed_mean_and_krum():
    clients = [{"w": [1.0, 1.0]}, {"w": [2.0, 2.0]}, {"w": [3.0, 3.0]}, {"w": [4.0, 4.0]}, {"w": [100.0, -100.0]}]
    counts = [1, 1, 1, 1, 50]
    med, _ = _round(build_strategy(cfg(strategy="fedmedian", num_clients=5)), G, clients, counts)
    np.testing.assert_allclose(med["w"].numpy(), [3.0, 2.0])  # coordinate-wise median, weights ignored
    trim, _ = _round(build_strategy(cfg(strategy="fedtrimmedavg", num_clients=5, trimmed_beta=0.2)), G, clients, counts)
    np.testing.assert_allclose(trim["w"].numpy(), [3.0, 2.0])  # drops 1 of 5 at each end: mean(2,3,4)=3, mean(1,2,3)=2
    krum, _ = _round(build_strategy(cfg(strategy="krum", num_clients=5, krum_byzantine=1)), G, clients, counts)
    assert krum["w"].numpy().tolist() in ([2.0, 2.0], [3.0, 3.0])  # a central update, never the outlier
    fedavg, _ = _round(build_strategy(cfg(num_clients=5)), G, clients, counts)
    assert fedavg["w"].numpy()[0] > 80  # plain FedAvg is dragged to the heavy outlier


def test_fedprox_sends_mu_and_proximal_gradient_is_mu_times_drift():
    s = build_strategy(cfg(strategy="fedprox", proximal_mu=0.5))
    ins = list(s.configure_train(1, ArrayRecord({k: Array(v) for k, v in G.items()}), ConfigRecord(), FakeGrid(3)))
    assert all(m.content["config"]["proximal-mu"] == 0.5 for m in ins)

    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
    hook = proximal_hook(list(lin.parameters()), mu=0.5)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 0.0]]))  # drift d = w - w_t = [2, 2]
    zero = torch.zeros((), requires_grad=True)
    total = hook(lin, None, None, zero)
    assert float(total.detach()) == pytest.approx(0.5 / 2 * (4 + 4))  # mu/2 * ||d||^2 = 2
    total.backward()
    torch.testing.assert_close(lin.weight.grad, torch.tensor([[1.0, 1.0]]))  # mu * d


def test_proximal_term_keeps_client_closer_to_global():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g).numpy()
    y = (x[:, 0] > 0).astype(np.int64)
    model = nn.Linear(4, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(epochs=3, batch_size=8, optimizer="sgd", lr=0.1, seed=1, device=torch.device("cpu"))
    free, _ = client_update(model, start, x, y, proximal_mu=0.0, **kw)
    prox, _ = client_update(model, start, x, y, proximal_mu=2.0, **kw)
    dist = lambda s: sum(float(((s[k] - start[k]) ** 2).sum()) for k in s)  # noqa: E731
    assert 0 < dist(prox) < 0.5 * dist(free)


def test_filter_rejects_nan_and_shape_and_keeps_the_rest(caplog):
    s = build_strategy(cfg(min_fit_clients=1))
    with caplog.at_level("WARNING", logger="driftloop.federated"):
        arrays, _ = _round(s, G, [{"w": [1.0, 1.0]}, {"w": [np.nan, 0.0]}, {"w": [1.0, 1.0, 1.0]}], [1, 1, 1])
    np.testing.assert_allclose(arrays["w"].numpy(), [1.0, 1.0])
    reasons = {f["client"]: f["reason"] for f in s.round_log[1]["failures"]}
    assert "NaN/inf" in reasons[1] and "shape (3,)" in reasons[2]
    assert s.round_log[1]["participants"] == [0]
    assert "rejected" in caplog.text and "NaN/inf" in caplog.text


def test_too_few_usable_replies_fail_the_round():
    s = build_strategy(cfg(min_fit_clients=2))
    with pytest.raises(
        RoundFailed, match=r"round 1: 1 usable client replies of 3 sampled, below federated.min_fit_clients=2"
    ):
        _round(s, G, [{"w": [1.0, 1.0]}, {"w": [np.inf, 0.0]}, None], [1, 1, 1])
    fails = s.round_log[1]["failures"]
    assert any("no reply before the round timeout" in f["reason"] for f in fails)


def test_screen_reply_and_poison_helpers():
    good = RecordDict({"a": ArrayRecord({"w": Array(np.ones(2, np.float32))}), "m": MetricRecord({"num-examples": 3})})
    assert screen_reply(good, {"w": (2,)}) is None
    assert "missing ['v']" in screen_reply(good, {"w": (2,), "v": (1,)})
    zero = RecordDict({"a": ArrayRecord({"w": Array(np.ones(2, np.float32))}), "m": MetricRecord({"num-examples": 0})})
    assert "positive number" in screen_reply(zero, {"w": (2,)})
    g, local = {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([2.0, 0.0])}
    torch.testing.assert_close(poison_update(g, local, "sign_flip", 2.0)["w"], torch.tensor([-1.0, 3.0]))
    torch.testing.assert_close(poison_update(g, local, "scale", 2.0)["w"], torch.tensor([3.0, -1.0]))


def test_the_aggregate_does_not_depend_on_the_order_replies_arrive_in():
    """Float sums depend on their order; replies are aggregated in client order, so the same seed
    gives the same global model whichever client finishes first."""
    clients = [{"w": [1.0, 1e-3]}, {"w": [1e8, 3.0]}, {"w": [-1e8, 7.0]}]  # 1.0 survives only added last
    a, _ = _round(build_strategy(cfg(strategy="fedavg")), G, clients, [1, 1, 1])
    b, _ = _round(build_strategy(cfg(strategy="fedavg")), G, clients, [1, 1, 1], reverse=True)
    assert a["w"].numpy().tobytes() == b["w"].numpy().tobytes()


def test_a_client_update_is_the_same_whatever_ran_before_it_in_the_process():
    """Dropout draws from torch's global generator; a client seeds it, so an actor that served other
    clients first gives the same update."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2))
    g = {k: v.clone() for k, v in model.state_dict().items()}
    r = np.random.default_rng(0)
    x, y = r.normal(size=(40, 4)).astype(np.float32), r.integers(0, 2, 40)
    kw = dict(epochs=2, batch_size=8, optimizer="sgd", lr=0.1, seed=5, device=torch.device("cpu"))
    first, _ = client_update(model, g, x, y, **kw)
    torch.rand(1000)  # another client's training moved the global generator
    second, _ = client_update(model, g, x, y, **kw)
    assert all(torch.equal(first[k], second[k]) for k in first)


class SetGrid:
    """Flower's grid: node ids (random, new every simulation) as a set."""

    def __init__(self, node_of_client):
        self.node_of_client = node_of_client

    def get_node_ids(self):
        return set(self.node_of_client.values())


def test_the_sampled_clients_do_not_depend_on_the_random_node_ids():
    """The strategy samples with ``random.sample`` over the grid's node ids; the ids (and so a set's
    order) change every run, so ExcludingGrid lists them in client order: the same seed then picks
    the same clients."""
    import random

    from tasks.federated.validation_round import ExcludingGrid

    picked = []
    for node_of_client in ({c: 1000 + c for c in range(10)}, {c: 1009 - c for c in range(10)}):
        client_of_node = {n: c for c, n in node_of_client.items()}
        grid = ExcludingGrid(SetGrid(node_of_client), [node_of_client[3]], client_of_node)  # type: ignore[arg-type]
        random.seed(11)
        ins = build_strategy(cfg(num_clients=10, fraction_fit=0.4)).configure_train(
            1, ArrayRecord({k: Array(v) for k, v in G.items()}), ConfigRecord(), grid
        )
        picked.append(sorted(client_of_node[int(m.metadata.dst_node_id)] for m in ins))
    assert len(picked[0]) == 3 and 3 not in picked[0]  # 40 % of the 9 valid clients
    assert picked[0] == picked[1]


def test_the_federated_evaluation_does_not_depend_on_the_order_replies_arrive_in():
    s = build_strategy(cfg(strategy="fedavg"))
    ins = list(s.configure_evaluate(1, ArrayRecord({k: Array(v) for k, v in G.items()}), ConfigRecord(), FakeGrid(3)))
    ins.sort(key=lambda m: m.metadata.dst_node_id)
    losses = [1.0, 1e17, -1e17]  # 1.0 survives only when added last
    replies = [
        Message(
            content=RecordDict(
                {"metrics": MetricRecord({"eval_loss": v, "eval_accuracy": 0.5, "num-examples": 1, "partition-id": i})}
            ),
            reply_to=m,
        )
        for i, (m, v) in enumerate(zip(ins, losses))
    ]
    a = s.aggregate_evaluate(1, replies)
    b = s.aggregate_evaluate(1, replies[::-1])
    assert a is not None and b is not None and a["eval_loss"] == b["eval_loss"]
    assert list(s.round_log[1]["client_eval"]) == ["0", "1", "2"]
