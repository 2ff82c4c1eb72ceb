"""The maths of a federated round, free of Flower: the client update (FedAvg's ClientUpdate, with
FedProx's proximal term), FedAvg's weighted average, and the poisoned updates used to test robust
aggregation. The ClientApp, the benchmarks and the tests all call these.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from tasks.models.train import LossHook, make_optimizer, train_one_epoch
from tasks.seeding import derive_seed

State = dict[str, torch.Tensor]


def proximal_hook(global_params: Sequence[torch.Tensor], mu: float) -> LossHook:
    """FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks", eq. 2): add
    ``mu/2 * ||w - w_t||^2`` to each local loss, ``w_t`` the global weights the round started from.
    Its gradient, ``mu * (w - w_t)``, pulls local models back towards the global one.
    """
    anchors = [p.detach().clone() for p in global_params]

    def hook(model: nn.Module, xb, yb, loss: torch.Tensor) -> torch.Tensor:
        prox = sum(((w - a) ** 2).sum() for w, a in zip(model.parameters(), anchors))
        return loss + 0.5 * mu * prox

    return hook


def client_update(
    model: nn.Module,
    global_state: Mapping[str, torch.Tensor],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str,
    lr: float,
    seed: int,
    device: torch.device,
    proximal_mu: float = 0.0,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
) -> tuple[State, float]:
    """ClientUpdate of FedAvg (McMahan et al. 2017, Algorithm 1): start from the global weights and
    run ``epochs`` local epochs (E) of mini-batches of ``batch_size`` (B) through
    :func:`tasks.models.train.train_one_epoch`; with ``proximal_mu > 0`` the loss carries FedProx's
    proximal term. Epoch ``e`` shuffles with ``derive_seed(seed, "epoch", e)``.

    Returns the local state dict (CPU tensors) and the mean training loss of the last epoch.
    FedSGD is the special case ``epochs=1, batch_size >= len(y)`` with plain SGD.
    """
    model.load_state_dict(global_state)
    model.to(device)
    # Dropout draws from torch's global generator, whose state would otherwise depend on which clients
    # this process (a Ray actor serves several) ran before: seed it, so a round is the same every run.
    torch.manual_seed(derive_seed(seed, "dropout"))
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    hook = proximal_hook(list(model.parameters()), proximal_mu) if proximal_mu > 0 else None
    loss = float("nan")
    for e in range(1, epochs + 1):
        loss = train_one_epoch(model, opt, x, y, batch_size, derive_seed(seed, "epoch", e), device, loss_hook=hook)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, loss


def weighted_average(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> State:
    """FedAvg's aggregate ``w_{t+1} = sum_k (n_k / n) w_k`` (McMahan et al. 2017, Algorithm 1),
    ``weights`` being the clients' example counts ``n_k``. Integer buffers (batch-norm counters)
    are averaged in float and cast back.
    """
    if not states:
        raise ValueError("weighted_average: no client states")
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(states) or not np.all(w > 0):
        raise ValueError("weighted_average: need one positive weight per state")
    w = w / w.sum()
    out: State = {}
    for key in states[0]:
        acc = float(w[0]) * states[0][key].double()
        for wi, s in zip(w[1:], states[1:]):
            acc = acc + float(wi) * s[key].double()
        out[key] = acc.to(states[0][key].dtype)
    return out


FAULT_KINDS = ("nan", "crash", "hang", "exit", "sign_flip", "scale", "shape")


def poison_update(
    global_state: Mapping[str, torch.Tensor], local_state: Mapping[str, torch.Tensor], kind: str, factor: float = 10.0
) -> State:
    """A Byzantine client's reply, for robustness tests and the robust-aggregation benchmark.

    With the honest update ``d = w_local - w_global``: ``"sign_flip"`` sends ``w_global - factor * d``
    (a sign-flipping attack, scaled), ``"scale"`` sends ``w_global + factor * d`` (a boosted update,
    as in model-replacement attacks), ``"nan"`` sends NaN weights, ``"shape"`` drops a row of the first
    weight matrix (a reply the server must reject as mismatched).
    """
    if kind == "sign_flip":
        return {k: global_state[k] - factor * (v - global_state[k]) for k, v in local_state.items()}
    if kind == "scale":
        return {k: global_state[k] + factor * (v - global_state[k]) for k, v in local_state.items()}
    if kind == "nan":
        return {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in local_state.items()}
    if kind == "shape":
        out = dict(local_state)
        first = next(k for k, v in local_state.items() if v.ndim >= 2)
        out[first] = local_state[first][:-1]
        return out
    raise ValueError(f"poison_update: unknown kind {kind!r}")
