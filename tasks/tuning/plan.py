"""Hyperband bracket plans: Algorithm 1 of the paper, and the plan Ray Tune's scheduler runs.

Li, Jamieson, DeSalvo, Rostamizadeh, Talwalkar, "Hyperband: A Novel Bandit-Based Approach to
Hyperparameter Optimization", JMLR 18(185), 2018 — Algorithm 1::

    s_max = floor(log_eta(R)),  B = (s_max + 1) R
    for s in s_max, s_max - 1, ..., 0:
        n = ceil(B / R * eta^s / (s + 1)),  r = R eta^-s
        for i in 0..s:  n_i = floor(n eta^-i),  r_i = r eta^i      # successive halving
            keep the top floor(n_i / eta) configurations

:func:`hyperband_plan` follows Algorithm 1 exactly. For R=81, eta=3 its first rungs hold
81/34/15/8/5 configurations. The paper's Table 1 prints 81/27/9/6/5 for the same (R, eta): the
table does not follow the algorithm's ``n`` formula; this code follows the algorithm.

:func:`ray_hyperband_plan` is what ``ray.tune.schedulers.HyperBandScheduler`` (ray 2.55.1) runs,
read from its source: ``s_max + 1 = round(log_eta(max_t)) + 1`` (round, not floor); bracket ``s``
starts ``ceil((s_max + 1) / (s + 1) * eta^s)`` trials at ``int(max_t * eta^-s)`` epochs; each
halving keeps ``ceil(n / eta)`` trials (Algorithm 1 keeps ``floor``) and multiplies the milestone
by eta, capped at max_t. Ray fills brackets in the order s = 0, 1, ..., s_max (Algorithm 1 runs
s_max first), skips brackets whose first milestone rounds to 0 epochs, and resumes paused trials
from their checkpoints, so a trial promoted from r_i to r_{i+1} epochs trains only the difference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from tasks.errors import ConfigError


@dataclass(frozen=True)
class Rung:
    """Rung ``i`` of a bracket: ``n`` configurations trained to ``r`` epochs each."""

    i: int
    n: int
    r: float


@dataclass(frozen=True)
class Bracket:
    """Bracket ``s``: its rungs and its cost in epochs.

    ``total_epochs`` is Algorithm 1's count, sum(n_i * r_i) (each rung trains its configurations
    for r_i epochs); ``resumed_epochs`` counts a promoted configuration only for the epochs it
    adds, sum(n_i * (r_i - r_{i-1})), which is what a scheduler that resumes checkpoints spends.
    """

    s: int
    rungs: list[Rung]
    total_epochs: float
    resumed_epochs: float


@dataclass(frozen=True)
class Plan:
    """A whole Hyperband band: one bracket per s. ``source`` says which rules computed it."""

    max_t: int
    eta: int
    source: str
    s_max: int
    budget_per_bracket: float
    brackets: list[Bracket] = field(default_factory=list)

    @property
    def total_epochs(self) -> float:
        return sum(b.total_epochs for b in self.brackets)

    @property
    def resumed_epochs(self) -> float:
        return sum(b.resumed_epochs for b in self.brackets)

    @property
    def num_configurations(self) -> int:
        return sum(b.rungs[0].n for b in self.brackets)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            total_epochs=self.total_epochs,
            resumed_epochs=self.resumed_epochs,
            num_configurations=self.num_configurations,
        )
        return d


def check_plan_args(max_t: int, eta: int, key_prefix: str = "tuning.") -> None:
    """Raise :class:`ConfigError` naming the key when (R, eta) cannot make a Hyperband plan."""
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ConfigError(f"{key_prefix}eta must be an integer >= 2, got {eta!r}")
    if isinstance(max_t, bool) or not isinstance(max_t, int) or max_t < 1:
        raise ConfigError(f"{key_prefix}max_t must be a positive integer number of epochs, got {max_t!r}")
    if max_t < eta:
        raise ConfigError(
            f"{key_prefix}max_t (R={max_t}) must be at least {key_prefix}eta ({eta}): "
            "with R < eta Hyperband has a single bracket and never stops a trial early"
        )


def _ilog(x: int, base: int) -> int:
    """floor(log_base(x)) in integers (math.log(243, 3) is 4.999...)."""
    k = 0
    while base ** (k + 1) <= x:
        k += 1
    return k


def _bracket(s: int, counts: list[int], sizes: list[float]) -> Bracket:
    rungs = [Rung(i, n, r) for i, (n, r) in enumerate(zip(counts, sizes))]
    total = sum(n * r for n, r in zip(counts, sizes))
    resumed = sum(n * (r - (sizes[i - 1] if i else 0)) for i, (n, r) in enumerate(zip(counts, sizes)))
    return Bracket(s, rungs, total, resumed)


def hyperband_plan(max_t: int, eta: int) -> Plan:
    """The bracket plan of Hyperband Algorithm 1 (Li et al., JMLR 2018) for R=max_t, eta.

    Brackets are listed in the algorithm's order, s = s_max down to 0. ``r_i`` may be fractional
    (R eta^-s when R is not a power of eta), as in the algorithm.
    """
    check_plan_args(max_t, eta)
    s_max = _ilog(max_t, eta)
    budget = (s_max + 1) * max_t
    brackets = []
    for s in range(s_max, -1, -1):
        # ceil(B/R * eta^s/(s+1)) in exact integer arithmetic: B/R = s_max + 1.
        n = -(-((s_max + 1) * eta**s) // (s + 1))
        counts = [n // eta**i for i in range(s + 1)]
        sizes = [max_t * eta ** (i - s) if i >= s else max_t / eta ** (s - i) for i in range(s + 1)]
        sizes = [float(r) for r in sizes]
        brackets.append(_bracket(s, counts, sizes))
    return Plan(max_t, eta, "Hyperband Algorithm 1 (Li et al., JMLR 2018)", s_max, float(budget), brackets)


def ray_s_max(max_t: int, eta: int) -> int:
    """Ray's s_max: ``round(log(max_t) / log(eta))`` (HyperBandScheduler.__init__)."""
    return int(round(math.log(max_t) / math.log(eta)))


def ray_bracket_sizes(max_t: int, eta: int) -> list[tuple[int, int, int]]:
    """(s, starting trials, first milestone) for each bracket Ray creates, in fill order s = 0, 1, ...

    Brackets whose first milestone ``int(max_t * eta^-s)`` is 0 epochs are skipped, as Ray does.
    """
    s_max_1 = ray_s_max(max_t, eta) + 1
    out = []
    for s in range(s_max_1):
        r0 = int(max_t * eta ** (-s))
        if r0 == 0:
            continue
        n0 = int(math.ceil(s_max_1 / (s + 1) * eta**s))
        out.append((s, n0, r0))
    return out


def ray_rung_milestones(max_t: int, eta: int, s: int) -> list[int]:
    """Cumulative epochs at which Ray's bracket ``s`` compares its trials (the last is max_t)."""
    r = int(max_t * eta ** (-s))
    out = [r]
    for _ in range(s):
        r = int(min(r * eta, max_t))
        out.append(r)
    return out


def ray_hyperband_plan(max_t: int, eta: int) -> Plan:
    """The plan ``ray.tune.schedulers.HyperBandScheduler`` runs for one full band (see module doc).

    Brackets are listed in Ray's fill order (s = 0 first). ``r`` of a rung is its cumulative
    milestone in epochs; survivors of a halving are ``ceil(n / eta)``.
    """
    check_plan_args(max_t, eta)
    brackets = []
    for s, n0, _ in ray_bracket_sizes(max_t, eta):
        counts = [n0]
        for _ in range(s):
            counts.append(int(math.ceil(counts[-1] / eta)))
        sizes = [float(m) for m in ray_rung_milestones(max_t, eta, s)]
        brackets.append(_bracket(s, counts, sizes))
    s_max = ray_s_max(max_t, eta)
    return Plan(
        max_t, eta, "ray.tune.schedulers.HyperBandScheduler (ray 2.55.1)", s_max, float((s_max + 1) * max_t), brackets
    )
