"""Configuration of federated rounds with Flower (owned by tasks/federated)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import Section


class FederatedConfig(Section):
    enabled: bool = True
    engine: Literal["simulation", "deployment"] = "simulation"
    strategy: Literal["fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum"] = "fedavg"
    num_clients: int = Field(10, ge=1)
    fraction_fit: float = Field(1.0, description="client fraction C per round, in (0, 1]")
    min_fit_clients: int = Field(2, ge=1)
    rounds: int = Field(10, ge=1)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1, description="local batch B; 0 is not allowed, use a large number for 'all'")
    proximal_mu: float = Field(0.01, ge=0.0)
    partition: Literal["iid", "dirichlet", "shards", "unbalanced"] = "dirichlet"
    alpha: float = Field(0.5, description="Dirichlet concentration, > 0")
    trimmed_beta: float = Field(0.2, ge=0.0, lt=0.5)
    krum_byzantine: int = Field(1, ge=0)
    superlink_address: str | None = None
    round_timeout_s: float = Field(120.0, gt=0.0)
