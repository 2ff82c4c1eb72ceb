"""Configuration of federated rounds with Flower (owned by tasks/federated).

Checks that need only the configuration (fraction in (0, 1], alpha > 0, a known strategy, the
minimum of clients per round not above the number of clients, Krum's Byzantine bound) run here,
so ``load_settings`` fails before any data is read. Checks that need the data (more clients than
training samples) run in :func:`tasks.federated.partition.partition_indices`, still before round one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.config_base import Section

STRATEGIES = ("fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "fedavgm", "fedadam")
PARTITIONS = ("iid", "dirichlet", "shards", "unbalanced")


class FederatedConfig(Section):
    enabled: bool = True
    engine: Literal["simulation", "deployment"] = "simulation"
    # A str checked by a validator (not a Literal) so the error lists the known names. FedAvgM
    # (server momentum 0.5) with client lr 3e-3: within 2 points of central training on digits
    # (10 clients, Dirichlet 0.5, 10 rounds; benchmarks/federated_quality.py), plain FedAvg at
    # the training lr 1e-3 was 5-6 points behind.
    strategy: str = "fedavgm"
    num_clients: int = Field(10, ge=1)
    fraction_fit: float = Field(1.0, description="client fraction C per round, in (0, 1]")
    min_fit_clients: int = Field(2, ge=1, description="a round with fewer accepted replies fails the run")
    rounds: int = Field(10, ge=1)
    # E=5 local epochs per round, as in the FedAvg paper's best non-IID settings; E=1 underfits in 10 rounds here.
    local_epochs: int = Field(5, ge=1)
    batch_size: int = Field(32, ge=1, description="local batch B; 0 is not allowed, use a large number for 'all'")
    # None: the training section's optimizer. Clients hold few rows each (digits: ~100, a 569-row table:
    # ~40) and get 10 rounds of E=5 epochs, far fewer steps than central training: their learning rate
    # is the training lr (the one tuning picked, when tuning runs) times client_lr_scale. 3x is what
    # gets digits (1e-3 -> 3e-3) and breast cancer (tuned SGD 4.9e-3 -> 1.5e-2) there in the budget;
    # the tuned lr itself left breast cancer 6 points behind. client_lr: an absolute value instead.
    client_optimizer: Literal["sgd", "adam", "adamw"] | None = None
    client_lr: float | None = Field(None, gt=0.0, description="client learning rate (None: training.lr x scale)")
    client_lr_scale: float = Field(3.0, gt=0.0, description="client lr as a multiple of training.lr")
    proximal_mu: float = Field(0.01, ge=0.0)
    # Share of each client's own rows held out for federated evaluation (the global model on the
    # clients' data, every round); 0 turns federated evaluation off.
    local_eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    # Also train the model centrally on the same split and draw its test accuracy in the round plot
    # (the yardstick of the federated result; costs one central training run).
    central_baseline: bool = True
    partition: str = "dirichlet"
    alpha: float = Field(0.5, description="Dirichlet concentration, > 0")
    shards_per_client: int = Field(2, ge=1, description="pathological shards per client (McMahan et al.: 2)")
    unbalanced_sigma: float = Field(1.0, gt=0.0, description="log-normal sigma of client sizes ('unbalanced')")
    min_partition_size: int = Field(1, ge=1, description="fewest training samples any client may get")
    # Server optimizer of fedavgm (server learning rate and momentum) and fedadam (eta, tau).
    server_lr: float = Field(1.0, gt=0.0)
    server_momentum: float = Field(0.5, ge=0.0, lt=1.0)
    server_tau: float = Field(1e-3, gt=0.0)
    trimmed_beta: float = Field(0.2, ge=0.0, lt=0.5)
    krum_byzantine: int = Field(1, ge=0)
    multikrum_select: int = Field(3, ge=1, description="updates MultiKrum averages (Krum uses 1)")
    # Deployment engine. superlink_address: the Control API (host:port) of an existing federation's
    # SuperLink, whose SuperNodes their data owners started (`driftloop supernode`): the task starts
    # no process. None: a local demo federation (a SuperLink and num_clients SuperNodes on 127.0.0.1,
    # each serving its own file cut from the data). superlink_fleet_address: that SuperLink's Fleet
    # API (what SuperNodes connect to), only checked to be reachable.
    superlink_address: str | None = None
    superlink_fleet_address: str | None = None
    # TLS (all three, or none): PEM files made by infra/flower/make_certs.sh.
    tls_ca_cert: str | None = None
    tls_server_cert: str | None = None
    tls_server_key: str | None = None
    # SuperNode authentication: a dir holding client_credentials_<i> / client_credentials_<i>.pub
    # (ECDSA keys, infra/flower/make_certs.sh); the SuperLink then accepts only registered nodes.
    supernode_auth_dir: str | None = None
    round_timeout_s: float = Field(120.0, gt=0.0, description="seconds a round waits for client replies")
    startup_timeout_s: float = Field(60.0, gt=0.0, description="seconds to wait for SuperLink/SuperNodes")

    def client_learning_rate(self, training_lr: float) -> float:
        """The clients' learning rate: ``client_lr``, else ``training_lr * client_lr_scale``."""
        return float(self.client_lr if self.client_lr is not None else training_lr * self.client_lr_scale)

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; known: {', '.join(STRATEGIES)}")
        return v

    @field_validator("partition")
    @classmethod
    def _known_partition(cls, v: str) -> str:
        if v not in PARTITIONS:
            raise ValueError(f"unknown partition {v!r}; known: {', '.join(PARTITIONS)}")
        return v

    @field_validator("fraction_fit")
    @classmethod
    def _fraction_in_range(cls, v: float) -> float:
        if not (0.0 < v <= 1.0):
            raise ValueError(f"the client fraction C must lie in (0, 1], got {v}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha_positive(cls, v: float) -> float:
        if not v > 0.0:
            raise ValueError(f"the Dirichlet concentration alpha must be > 0, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "FederatedConfig":
        if self.min_fit_clients > self.num_clients:
            raise ValueError(f"min_fit_clients ({self.min_fit_clients}) exceeds num_clients ({self.num_clients})")
        tls = [self.tls_ca_cert, self.tls_server_cert, self.tls_server_key]
        if any(tls) and not all(tls):
            raise ValueError("TLS needs all of tls_ca_cert, tls_server_cert and tls_server_key (or none)")
        if self.strategy in ("krum", "multikrum"):
            # Krum scores each update by its n - f - 2 nearest neighbours (Blanchard et al. 2017).
            if self.clients_per_round() < 2 * self.krum_byzantine + 3:
                raise ValueError(
                    f"{self.strategy} tolerates f={self.krum_byzantine} Byzantine clients only with at least "
                    f"2f+3={2 * self.krum_byzantine + 3} clients per round; this config samples "
                    f"{self.clients_per_round()}"
                )
        if self.superlink_fleet_address and not self.superlink_address:
            raise ValueError("superlink_fleet_address needs superlink_address (the Control API) as well")
        return self

    def clients_per_round(self) -> int:
        """Clients sampled per round: max(floor(C * K), min_fit_clients), as Flower's FedAvg samples."""
        return max(int(self.num_clients * self.fraction_fit), self.min_fit_clients)
