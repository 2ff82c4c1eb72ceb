"""Run federated rounds on one of two Flower engines, with the same ServerApp and ClientApp code.

- ``simulation``: Flower's simulation in its own subprocess (:mod:`tasks.federated.simulate`); the
  clients' data are partitions cut from the central training split (that is what a simulation is for).
- ``deployment``: a real federation (:mod:`tasks.federated.cluster`). With
  ``federated.superlink_address`` it runs against an existing SuperLink whose SuperNodes were
  started by their data owners (``driftloop supernode``) and starts nothing itself; without, a local
  demo: a SuperLink and ``num_clients`` SuperNodes on 127.0.0.1, each given its own file cut from the
  data, in its own directory.

Either way the ClientApps read their rows on their own nodes and get everything else in the
message; the ServerApp reads the orchestrator's side (settings, initial model, schema, held-out
splits) from its workspace (:mod:`tasks.federated.workspace`: for a deployment a prefix of the
artifact store, named in the Flower run config; for the simulation, our own subprocess, its work
dir) and writes the global model per round, the per-round records, the clients' validation table
and a status file back there: results come back as objects (safetensors, JSON), never pickles. Staging and
collecting: :mod:`tasks.federated.staging`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from tasks.errors import ConfigError
from tasks.federated.cluster import FlowerCluster
from tasks.federated.faults import Fault, faults_env
from tasks.federated.processes import FederatedEngineError, check_reachable, free_port, tail
from tasks.federated.processes import child_env as _child_env  # noqa: F401  (kept for tests/reliability)
from tasks.federated.simulate import run_in_subprocess
from tasks.federated.staging import FederatedResult, StagedRun, stage, write_app
from tasks.federated.workspace import local_workspace, staging_workspace, write_spec

__all__ = [
    "FederatedEngineError",
    "FederatedResult",
    "FlowerCluster",
    "check_reachable",
    "free_port",
    "run_federated",
    "run_federated_drift_check",
    "run_simulations",
]

log = logging.getLogger("driftloop.federated")


def _run_deployment(
    root: Path, app: Path, staged: StagedRun, splits, faults: Sequence[Fault], cluster: FlowerCluster | None
) -> str:
    fed = staged.settings.federated
    if cluster is not None:
        rc = cluster.run_app(app, staged.timeout)
        return f"flwr run exit status {rc}\n" + tail(cluster.home / "logs" / "flwr-run.log")
    home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=root))
    nodes_root = None
    paths: list[Path] = []
    if not fed.superlink_address:
        # The local demo: each SuperNode's file in a directory of its own, outside the work dir.
        nodes_root = Path(tempfile.mkdtemp(prefix="driftloop-supernodes-"))
        paths = staged.write_node_data(splits, [nodes_root / f"node-{i}" for i in range(fed.num_clients)])
    try:
        node_env = faults_env(faults, fed.round_timeout_s + 5.0)
        with FlowerCluster.from_config(fed, home, data_paths=paths, node_env=node_env) as own:
            rc = own.run_app(app, staged.timeout)
    finally:
        if nodes_root is not None:
            shutil.rmtree(nodes_root, ignore_errors=True)
    return f"flwr run exit status {rc}\n" + tail(home / "logs" / "flwr-run.log")


def _clear(ws) -> None:
    try:
        ws.clear()
    except Exception as e:  # noqa: BLE001 - the result is collected; a leftover staging prefix is only clutter
        log.warning("could not delete the federated staging %s: %s", ws.prefix, e)


def run_federated(
    settings,
    splits,
    initial_state: dict[str, torch.Tensor] | bytes | None = None,
    *,
    workdir: str | os.PathLike | None = None,
    faults: Sequence[Fault] = (),
    cluster: FlowerCluster | None = None,
    engine: str | None = None,
    schema=None,
) -> FederatedResult:
    """Run ``settings.federated.rounds`` federated rounds.

    ``initial_state``: the starting global weights (a state dict or safetensors bytes, e.g. the tuned
    model's), else a fresh model from ``settings.model`` seeded by ``settings.seed``. Before round one
    every client validates its data against ``schema`` (default: inferred from ``splits.train``);
    the global model is evaluated on the clients' held-out rows and on ``splits.val`` and
    ``splits.test`` after every round. In the simulation and the local demo federation the clients'
    data are partitions of ``splits.train``; against an existing federation (``superlink_address``,
    or ``cluster``: a :class:`FlowerCluster` the caller started, whose SuperNodes serve their own
    files) they are the nodes' own and ``splits.train`` only shapes the model and the schema.
    ``engine`` overrides ``settings.federated.engine``. ``workdir`` keeps the logs, the Flower home
    and app dir, and for the simulation the server's inputs and per-round checkpoints (default: a
    temporary directory, deleted afterwards); a deployment's server inputs and results are staged
    under ``federated/staging/<id>/`` of ``settings.store`` and deleted once collected. ``faults``:
    injected client faults (tests, drills, benchmarks; simulation and local demo only).

    Bad input (more clients than samples, missing TLS files, an unreachable SuperLink) raises
    before round one. A round (or the validation) with fewer than ``min_fit_clients`` usable
    clients raises :class:`RoundFailed`; an engine that crashed or stopped without a result raises
    :class:`FederatedEngineError` with the engine's error. No result means no model.
    """
    fed = settings.federated
    staged = stage(settings, splits, initial_state, engine or fed.engine, cluster, schema)
    if faults and staged.summary is None:
        raise ConfigError("faults can be injected only where the task starts the clients (simulation, local demo)")
    own_dir = workdir is None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="driftloop-fed-"))
    root.mkdir(parents=True, exist_ok=True)
    # The simulation runs in our own subprocess: its work dir is its workspace. A deployment's
    # ServerApp runs under the SuperLink, maybe elsewhere: its workspace is a prefix of the artifact store.
    ws = local_workspace(root) if staged.engine == "simulation" else staging_workspace(settings.store)
    try:
        staged.write(ws, splits, faults, fed.num_clients, clients_dir=root / "clients")
        log.info(
            "federated: %s engine, %s, %d clients, %d rounds", staged.engine, fed.strategy, fed.num_clients, fed.rounds
        )
        if staged.engine == "simulation":
            out_tail = run_in_subprocess([root], staged.timeout, root / "logs" / "simulation.log")
        else:
            out_tail = _run_deployment(
                root, write_app(root, ws.run_config(settings.store)), staged, splits, faults, cluster
            )
        return staged.collect(ws, out_tail)
    finally:
        if staged.engine != "simulation":
            _clear(ws)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def run_simulations(
    runs: Sequence[tuple[Any, Sequence[Fault]]],
    splits,
    initial_state: dict[str, torch.Tensor] | bytes | None = None,
    *,
    workdir: str | os.PathLike | None = None,
) -> list[FederatedResult]:
    """Several simulation-engine runs over the same ``splits`` in ONE simulation subprocess.

    ``runs``: ``(settings, faults)`` pairs, e.g. a clean run and faulty variants of it to compare.
    Each run is what :func:`run_federated` with ``engine="simulation"`` would do (same checks, same
    work-dir layout, in ``workdir/run-<i>``, same result), but the runs share one
    ``python -m tasks.federated.simulate`` process and run one after another in it: each still gets
    its own Ray runtime; what is saved is the process start-up and imports, a few seconds per run on
    2 cores. Every run is checked before the subprocess starts. All runs are attempted; then the
    results come back in order, or the first failed run raises as :func:`run_federated` would.
    """
    if not runs:
        raise ConfigError("run_simulations: no runs given")
    staged = [stage(s, splits, initial_state, "simulation", None) for s, _ in runs]
    own_dir = workdir is None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="driftloop-fed-"))
    roots = [root / f"run-{i}" for i in range(len(runs))]
    try:
        for st, wd, (s, faults) in zip(staged, roots, runs):
            wd.mkdir(parents=True, exist_ok=True)
            st.write(local_workspace(wd), splits, faults, s.federated.num_clients, clients_dir=wd / "clients")
        log.info("federated: %d simulation runs in one process", len(runs))
        out_tail = run_in_subprocess(roots, sum(st.timeout for st in staged), root / "logs" / "simulation.log")
        return [st.collect(local_workspace(wd), out_tail) for st, wd in zip(staged, roots)]
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def run_federated_drift_check(
    settings,
    model_spec: dict[str, Any],
    weights: bytes,
    reference_files: dict[str, bytes],
    *,
    cluster: FlowerCluster | None = None,
    workdir: str | os.PathLike | None = None,
    detectors: Sequence[str] | None = None,
) -> list:
    """Ask an existing federation (``cluster``, or ``federated.superlink_address``) for a per-client
    drift report: each client runs the champion (``model_spec``, safetensors ``weights``) and the
    detectors of its drift reference (``reference_files``: ``tasks.drift.reference.reference_to_files``)
    on its new local data and replies p-values and verdicts only. Returns the clients'
    :class:`~tasks.federated.client_drift.ClientDrift`, sorted by client.
    """
    from tasks.federated.client_drift import ClientDrift
    from tasks.federated.drift_round import write_drift_inputs

    fed = settings.federated
    if cluster is None and not fed.superlink_address:
        raise ConfigError("a federated drift check asks an existing federation: set federated.superlink_address")
    if cluster is None:
        check_reachable(fed.superlink_address)
    own_dir = workdir is None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="driftloop-fed-drift-"))
    root.mkdir(parents=True, exist_ok=True)
    ws = staging_workspace(settings.store)
    try:
        write_spec(
            ws,
            {
                "mode": "drift",
                "settings": settings.resolved(),
                "model_spec": model_spec,
                "detectors": list(detectors or []),
            },
        )
        write_drift_inputs(ws, weights, reference_files)
        timeout = fed.startup_timeout_s + fed.round_timeout_s + 60.0
        app = write_app(root, ws.run_config(settings.store))
        if cluster is not None:
            cluster.run_app(app, timeout, logname="flwr-drift.log")
            out_tail = tail(cluster.home / "logs" / "flwr-drift.log")
        else:
            home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=root))
            with FlowerCluster.from_config(fed, home) as own:
                own.run_app(app, timeout, logname="flwr-drift.log")
            out_tail = tail(home / "logs" / "flwr-drift.log")
        status = ws.read_json("out/status.json", {})
        if status.get("state") != "completed":
            raise FederatedEngineError(
                f"the federated drift check failed: {status.get('error') or 'no result'}\n--- log tail ---\n{out_tail}"
            )
        return [ClientDrift.from_dict(d) for d in ws.read_json("out/drift.json")]
    finally:
        _clear(ws)
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
