"""Run the reliability and security scenario tests and write docs/RELIABILITY.md from the results.

    .venv/bin/python scripts/reliability_report.py            # new scenarios + the existing scenario tests
    .venv/bin/python scripts/reliability_report.py --new-only # only tests/reliability (about 8 minutes)
    .venv/bin/python scripts/reliability_report.py --from-junit test-output/junit.xml
                                              # no new run: the whole suite's XML (bash scripts/test.sh)

Runs pytest with ``--junitxml`` on the scenario tests, reads each test's outcome and duration from
the XML and the figures the tests recorded under ``test-output/reliability/figures/`` (see
``tests/reliability/conftest.py``), and writes the scenario table. Exits with pytest's code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "test-output" / "reliability"
FIGURES = OUT / "figures"
DOC = ROOT / "docs" / "RELIABILITY.md"

# (area, scenario, pass criterion, test node ids). New scenarios live in tests/reliability; the
# others are the concern tests that already prove the scenario (referenced, not duplicated).
SCENARIOS: list[tuple[str, str, str, list[str]]] = [
    (
        "Orchestration",
        "A task fails twice, then succeeds (Prefect retries)",
        "exactly one run, one version, one promotion; failed attempts leave no object",
        [
            "tests/reliability/test_retries.py::test_failing_twice_then_succeeding_writes_one_run_one_version_one_promotion",
            "tests/reliability/test_retries.py::test_a_fault_that_persists_exhausts_the_retries_and_leaves_nothing",
        ],
    ),
    (
        "Orchestration",
        "The process running the training flow is killed mid-run (SIGTERM in an epoch; SIGKILL "
        "before the manifest; SIGKILL before registration)",
        "SIGTERM: run Crashed in the API; registry unchanged; no partial run listed; every listed run verifies; "
        "a rerun adds exactly one version",
        [
            "tests/reliability/test_killed_flow.py::test_killed_training_leaves_no_partial_run_and_a_rerun_adds_one_version"
        ],
    ),
    (
        "Orchestration",
        "A deployed run is SIGKILLed together with its runner (a lost machine): nobody can report it",
        "the heartbeat crash detector (`driftloop deploy`/`serve`) marks it Crashed; a run that ended normally "
        "is never touched",
        [
            "tests/reliability/test_heartbeat_crash.py::test_run_killed_with_its_runner_is_marked_crashed_by_missing_heartbeats"
        ],
    ),
    (
        "Orchestration",
        "Drift storm: 2 distinct events of one episode, each delivered twice, plus a manual trigger "
        "within the cooldown, all at once",
        "exactly one retraining run and one new model version",
        [
            "tests/reliability/test_drift_storm.py::test_drift_storm_gives_one_retraining_and_one_version",
            "tests/flows/test_drift_loop.py::test_retraining_runs_once_per_episode_with_lineage",
            "tests/deployments/test_builders.py::test_retraining_trigger_dedups_per_episode_within_the_cooldown",
        ],
    ),
    (
        "Orchestration",
        "The scheduler / runner was down for 4 drift-check intervals (4 late runs due at once on a "
        "real `prefect server start`), then `driftloop serve` returns; also 4 checks started at once in one process",
        "exactly one catch-up check runs (concurrency 1, CANCEL_NEW), the rest are cancelled; no batch is checked "
        "twice (write-once ledger)",
        [
            "tests/reliability/test_scheduler_outage.py::test_scheduler_back_after_an_outage_runs_one_catch_up_check",
            "tests/reliability/test_drift_storm.py::test_overlapping_catch_up_checks_check_each_batch_once",
        ],
    ),
    (
        "Orchestration",
        "`driftloop run training` (temporary Prefect server, no PREFECT_API_URL) SIGKILLed mid-epoch",
        "the temporary server does not outlive the command (a watchdog stops it within seconds); no process left",
        ["tests/reliability/test_ephemeral_server.py::test_sigkilled_run_leaves_no_prefect_server"],
    ),
    (
        "Orchestration",
        "Deployments on a real `prefect worker start --pool` (process pool, another working directory): "
        "a training run, a drift event's retraining, then the worker SIGKILLed mid-run",
        "both runs complete on the worker; the killed run is marked Crashed by the heartbeat detector; a new "
        "worker completes the next run",
        [
            "tests/reliability/test_worker_flows.py::test_deployments_run_on_a_real_worker_and_a_killed_worker_is_replaced"
        ],
    ),
    (
        "Tuning",
        "A trial's worker process is SIGKILLed mid-trial; the driver process is SIGKILLed mid-study and "
        "the study restored (synchronous Hyperband, same seed as a clean run)",
        "the trial resumes from its checkpoint and keeps its bracket; best configuration (and every trial's "
        "curve) equals the uninterrupted run's; no duplicate trial, no finished trial rerun",
        [
            "tests/reliability/test_tuning_faults.py::test_killed_trial_resumes_from_its_checkpoint_and_the_best_config_is_unchanged",
            "tests/reliability/test_tuning_faults.py::test_killed_driver_restored_study_has_no_duplicate_trials_and_the_same_best",
            "tests/tuning/test_study.py::test_crashed_trial_completes_from_its_checkpoint",
            "tests/tuning/test_study.py::test_interrupted_study_on_s3_resumes_without_rerunning_finished_trials",
        ],
    ),
    (
        "Federated",
        "20% of 10 clients crash in every round (a different 2 each round, from the base seed)",
        "training completes; final test accuracy within 1 point of the clean run",
        [
            "tests/reliability/test_federated_faults.py::test_twenty_percent_of_clients_crashing_every_round_stays_within_one_point"
        ],
    ),
    (
        "Federated",
        "2 of 10 clients poisoned (sign-flipped x10, boosted x10)",
        "FedAvg degrades by more than 5 points; the robust aggregator (FedMedian) stays within 2 points of clean",
        [
            "tests/reliability/test_federated_faults.py::test_poisoned_clients_degrade_fedavg_but_not_the_robust_aggregator",
            "tests/federated/test_aggregation.py::test_median_and_trimmed_mean_and_krum",
        ],
    ),
    (
        "Federated",
        "Crashing and NaN clients; a SuperNode killed mid-run (real SuperLink/SuperNodes)",
        "training completes; bad replies never aggregated",
        [
            "tests/federated/test_simulation.py::test_simulation_learns_and_survives_nan_and_crashing_clients",
            "tests/federated/test_deployment.py::test_killed_supernode_is_left_out_and_run_completes",
        ],
    ),
    (
        "Federated",
        "Only SuperNodes holding registered keys join a TLS SuperLink",
        "a SuperNode with an unregistered key is refused (exits, never listed, never sampled) while the TLS + "
        "SuperNode-auth run completes with the registered ones",
        [
            "tests/federated/test_deployment.py::test_unregistered_supernode_is_refused_by_tls_superlink",
            "tests/federated/test_deployment.py::test_deployment_engine_with_tls_and_supernode_auth",
        ],
    ),
    (
        "Storage",
        "The S3 server is stopped during a multipart upload (after part 1) and restarted on the same port and data dir",
        "the upload retries and completes byte for byte (or fails cleanly and the step retries); no partial "
        "object or run visible; champion unchanged until the new model is complete",
        ["tests/reliability/test_s3_faults.py::test_s3_server_stopped_mid_upload_and_restarted"],
    ),
    (
        "Storage",
        "One byte of a stored model flipped",
        "IntegrityError naming the key; the previous champion stays in service",
        [
            "tests/store/test_artifacts.py::test_sha256_mismatch_raises_integrity_error_naming_the_key",
            "tests/store/test_registry.py::test_corrupted_weights_raise_integrity_error",
        ],
    ),
    (
        "Storage",
        "A run killed before its manifest leaves orphaned objects; a slow writer races garbage collection",
        "`driftloop artifacts gc` deletes only manifest-less runs older than the minimum age; a commit that "
        "loses to GC's write-once tombstone fails naming the run; committed runs untouched",
        [
            "tests/store/test_gc.py::test_gc_deletes_only_old_orphans_and_keeps_committed_runs",
            "tests/store/test_gc.py::test_a_slow_writer_loses_its_commit_to_gc_never_its_objects",
            "tests/store/test_gc.py::test_gc_skips_a_run_committed_meanwhile",
            "tests/reliability/test_killed_flow.py::test_killed_training_leaves_no_partial_run_and_a_rerun_adds_one_version",
        ],
    ),
    (
        "Storage",
        "Two promotions race",
        "exactly one wins; history consistent",
        [
            "tests/store/test_registry.py::test_concurrent_promotions_have_exactly_one_winner",
            "tests/store/test_backends.py::test_concurrent_compare_and_swap_has_one_winner",
        ],
    ),
    (
        "Storage",
        "A pickle planted where a model or array is expected",
        "refused, never executed",
        [
            "tests/store/test_registry.py::test_planted_pickle_is_refused_never_executed",
            "tests/store/test_artifacts.py::test_npz_with_pickled_objects_is_refused_on_read",
            "tests/data/test_uri_and_quarantine.py::test_npz_object_arrays_are_never_unpickled",
        ],
    ),
    (
        "Storage",
        "Manifests of registered runs went missing (the champion's and a never-promoted version's), then "
        "`driftloop artifacts gc --older-than-hours 0`; then a version record that cannot be read; then the "
        "champion's version record deleted too",
        "GC deletes only the true orphan and keeps every object of every run a registry version references; "
        "with an unreadable version record, or a version the pointer names without a record, it stops, naming "
        "the file, and deletes nothing",
        ["tests/reliability/test_registry_safety.py::test_gc_never_deletes_objects_of_a_run_the_registry_references"],
    ),
    (
        "Storage",
        "`models promote`/`rollback` to a version whose weights or spec fail sha256",
        "refused (IntegrityError naming the run and object) before anything is written; champion unchanged; "
        "`models show --verify` reports each object (exit 1 when damaged); the integrity error fails its task "
        "at once instead of being retried as transient",
        [
            "tests/reliability/test_registry_safety.py::test_promote_and_rollback_verify_the_target_first_and_show_reports_integrity",
            "tests/reliability/test_registry_safety.py::test_an_integrity_error_is_not_retried_as_transient",
        ],
    ),
    (
        "Storage",
        "The champion pointer overwritten with random bytes, `[]` or wrong field types; a version record overwritten",
        "models list/show/promote/rollback and validate exit 1 naming the file and `driftloop models repair` (no "
        "traceback); `models repair` rebuilds the pointer from the append-only history (same champion and history) "
        "and lists damaged version records",
        [
            "tests/reliability/test_registry_safety.py::test_a_corrupt_champion_pointer_names_the_file_and_repair_rebuilds_it",
            "tests/reliability/test_registry_safety.py::test_a_corrupt_version_record_names_itself_and_repair_lists_it",
        ],
    ),
    (
        "Storage",
        "`driftloop models promote 2 --reason ...` run by 4 processes at once",
        "exactly one records the promotion with its reason; the losers say that nothing changed and print no "
        "older history entry",
        ["tests/reliability/test_registry_safety.py::test_promote_racing_itself_the_losers_say_nothing_changed"],
    ),
    (
        "Security",
        "Least privilege: the drift check runs with a SeaweedFS identity that reads the bucket and "
        "writes only drift/ and quarantine/",
        "the drift-check flow succeeds; 5 forbidden writes/deletes (run, version, champion, model delete, batches) "
        "denied; no secret in output, logs, flow-run parameters, errors or stored objects",
        [
            "tests/reliability/test_s3_faults.py::test_drift_check_runs_with_least_privilege_credentials_and_leaks_none",
            "tests/deployments/test_infra.py::test_drift_check_policy_reads_models_and_writes_only_reports",
            "tests/store/test_backends.py::test_credentials_never_appear_in_errors_or_reprs",
            "tests/test_settings.py::test_secrets_masked_in_resolved_config",
        ],
    ),
    (
        "Data",
        "A batch with NaN, out-of-range values, wrong dtype, duplicates, a new column or a truncated file",
        "quarantined with a per-rule report; triggers nothing",
        [
            "tests/data/test_validation.py::test_nan_and_inf",
            "tests/data/test_validation.py::test_out_of_range_overall_scope",
            "tests/data/test_validation.py::test_wrong_dtype",
            "tests/data/test_validation.py::test_duplicate_rows",
            "tests/data/test_uri_and_quarantine.py::test_new_column_in_a_parquet_file",
            "tests/data/test_uri_and_quarantine.py::test_unreadable_or_truncated_file",
            "tests/flows/test_training_flow.py::test_corrupted_data_is_quarantined_and_nothing_trained",
            "tests/flows/test_drift_loop.py::test_drift_check_flags_drift_quarantines_bad_batch_and_emits_one_event",
        ],
    ),
    (
        "Data",
        "Degenerate candidates over a ten-class champion: labels all one class (test accuracy 1.0), five "
        "classes dropped, 150 rows",
        "the gate refuses each (at_least_two_classes, keeps_champion_classes, enough_training_rows, "
        "reliable_evaluation) and the champion keeps accepting good batches; declaring `data.classes` allows the "
        "label change",
        [
            "tests/reliability/test_bad_candidates.py::test_the_gate_refuses_candidates_that_cannot_be_right",
            "tests/reliability/test_bad_candidates.py::test_sanity_rules_unit",
        ],
    ),
    (
        "Data",
        "Labels 99 in a fresh store; a negative label; labels stored as text",
        "a DataError before training names the file and row (no 100-class model, no `np.bincount` traceback, "
        "nothing written); validate and training apply one label rule (numeric text accepted by both, other "
        "text refused by both)",
        [
            "tests/reliability/test_bad_candidates.py::test_bad_label_sets_fail_clearly_before_training",
            "tests/reliability/test_bad_candidates.py::test_validate_and_training_apply_one_label_rule",
        ],
    ),
    (
        "Configuration",
        "A non-UTF-8 config file, duplicate YAML/JSON keys, `training.epochs=true`, "
        '`tuning.enabled=1`, `training.epochs="5"`',
        "a configuration error, exit 2, naming the file or key; no traceback",
        ["tests/reliability/test_config_faults.py::test_config_files_and_values_are_read_strictly"],
    ),
    (
        "Configuration",
        "A bad `tuning.search_space`; an unwritable `store.uri` (a local path under a file; S3 with a wrong secret)",
        "the training and retraining flows fail before their first stage (no task run) with a ConfigError naming "
        "the key; `driftloop run` exits 2; the write probe leaves nothing behind",
        [
            "tests/reliability/test_config_faults.py::test_a_bad_search_space_or_an_unwritable_store_fails_before_the_first_stage",
            "tests/reliability/test_config_faults.py::test_the_store_probe_on_s3_leaves_nothing_and_refuses_bad_credentials",
        ],
    ),
    (
        "Security",
        "Ray: who can reach and use the local Ray driftloop starts",
        "no dashboard HTTP port, no Ray Client server; token authentication on: a process without the token "
        "(or with a wrong one) cannot join, one with it can; `driftloop` and the Flower simulation turn it on "
        "before Ray is imported",
        [
            "tests/reliability/test_security_defaults.py::test_local_ray_has_no_dashboard_no_client_server_and_requires_its_token",
            "tests/reliability/test_security_defaults.py::test_the_driftloop_command_turns_on_ray_token_auth_before_ray_is_imported",
            "tests/reliability/test_security_defaults.py::test_token_auth_respects_a_users_ray_auth_setting",
            "tests/reliability/test_security_defaults.py::test_flower_simulation_ray_has_no_dashboard_and_token_auth",
        ],
    ),
    (
        "Security",
        "Prefect server with `PREFECT_SERVER_API_AUTH_STRING`",
        "anonymous and wrong credentials get 401; `driftloop` names the variable to set; a flow with the "
        "credentials is recorded, one without cannot start; the secret is in no log or output",
        [
            "tests/reliability/test_security_defaults.py::test_prefect_server_with_an_auth_string_refuses_anonymous_clients"
        ],
    ),
]

NOT_COVERED = [
    "**In-process runs killed with SIGKILL** (`driftloop run ...` without a server-side deployment) stay "
    "'Running' in the Prefect API: the crash detector watches deployment runs only, whose heartbeat frequency "
    "driftloop controls (a flow started from Python keeps Prefect's 180 s default and could be mistaken for a "
    "dead one). Their store writes are still all-or-nothing.",
    "**A run held by a dead worker is not restarted**: the heartbeat detector marks it Crashed and the next run "
    "goes to a live worker, but Prefect does not reschedule a Crashed run; start it again (or let the next "
    "drift event or schedule do so).",
    "**Ray's gRPC ports listen on every interface** (Ray 2.55 offers no loopback binding; `ray.init` replaces "
    "127.0.0.1 by the machine's address), as does the autoscaler's read-only metrics port (44217). Token "
    "authentication is the protection; a host firewall or a private network is still advised.",
]

SECURITY_DEFAULTS = """\
* **Ray** (`tasks/ray_security.py`, `tasks/tuning/runtime.py`): a local Ray is started without the
  dashboard's HTTP server and without the Ray Client server, and with **token authentication**
  (`RAY_AUTH_MODE=token`, a fresh 256-bit `RAY_AUTH_TOKEN` per `driftloop` process, set before Ray is
  imported and inherited by the Ray processes and the Flower simulation; never logged or written).
  Ray 2.55 cannot bind its gRPC ports to loopback (`ray.init` turns 127.0.0.1 into the machine's
  address; `_node_ip_address="127.0.0.1"` was a no-op), so the token is what stops another process or
  host from running code in it. A remote cluster (`tuning.ray_address`) keeps its own settings and
  must sit on a private network (see `infra/ray/README.md`); set `RAY_AUTH_MODE`/`RAY_AUTH_TOKEN`
  yourself to use the cluster's token.
* **Prefect server**: the server started by `driftloop up` listens on 127.0.0.1. Prefect's open-source
  server has no user accounts; to require credentials set `PREFECT_SERVER_API_AUTH_STRING="user:password"`
  on the server and the same `PREFECT_API_AUTH_STRING` on every client/worker (HTTP basic auth), and put it
  behind TLS (a reverse proxy) when it is reachable beyond localhost. Tested above: anonymous clients
  get 401, `driftloop deploy`/`serve` say which variable to set.
* **Flower**: `federated.engine = "deployment"` with TLS certificates (`infra/flower/make_certs.sh`) and
  SuperNode authentication (only SuperNodes whose public keys are registered with the SuperLink may
  join; `infra/flower/README.md`); tested by `tests/federated/test_deployment.py`, including a SuperNode
  with an unregistered key being refused.
* **S3**: `infra/s3/drift-check-policy.json` (IAM policy: read models, write only drift reports and
  quarantine); the same split on SeaweedFS identities is exercised by the least-privilege scenario above.
  Credentials are `SecretStr` in the settings, masked in resolved configurations, scrubbed from S3 error
  texts and never written to manifests (asserted by the tests listed above).
"""

FINDINGS = """\
* **Fixed: a manual retraining within the cooldown started a second run.** `flows/retraining.py` claimed
  an episode only for event-triggered runs; a manual trigger (no episode id) always trained. Now a
  manual trigger while a drift episode is open (within `drift.cooldown_seconds` of its start) joins that
  episode's write-once claim (and its batches), so a storm still trains once; pass an `episode_id` to
  force a separate run. Change: `flows/retraining.py` (6 lines) and a new task `open_episode` in
  `tasks/drift/steps.py`.
* **Fixed (issue 17): GC deleted a champion whose manifest was missing**; it now never collects a run
  any registry version names. Promote/rollback verify the target's objects first; a corrupt registry
  file names itself and `driftloop models repair` rebuilds the pointer from the new append-only
  `registry/<model>/history/` log; the model-registry tasks retried every error three times (1+4+10 s),
  integrity errors included: they now retry transient I/O only. The gate refuses candidates that cannot
  be right (`tasks/models/gate.py`); labels follow one rule (`tasks/data/labels.py`); config values are
  strictly typed; `driftloop run` ties its temporary Prefect server to its own life (`flows/ephemeral_server.py`).
* **Finding: a process worker's flow-run process survives the worker's SIGKILL** (Prefect starts it in a
  session of its own) and then reports its run Crashed itself ("Execution was aborted by Python system exit
  call"); the lost-machine scenario kills both, and the heartbeat detector marks the run Crashed.
* **Finding (left to the splits' owner)**: a dataset too small to stratify (60 rows of 10 classes) fails in
  scikit-learn's `train_test_split` with a raw ValueError.
* **Prefect 3.8.8 race**: a SIGTERM that lands while a `log_prints=True` flow is shipping a `print()` to
  the API leaves the run `Running` instead of `Crashed` (reproduced with a 5-line flow). The killed-flow
  test sends SIGTERM once the run is settled in an epoch.
* **Fixed: Ray token authentication instead of a loopback bind that never happened.** The earlier
  security test mocked `ray.init` and asserted the arguments; run for real, Ray's GCS, raylets and
  workers listened on every interface. See Security defaults.
* **Fixed (tuning): a retried trial left its Hyperband bracket.** Ray 2.55's HyperBand removed a failed
  trial from its bracket and re-added it to a new band on retry, so a SIGKILLed trial could run with a
  different budget while its old bracket halved without it; and a restored study put a trial that had
  not yet reported into another bracket. Both fixed in `tasks/tuning/ray_hooks.py`; the kill tests
  compare every trial's curve with the clean run's.
* **Finding (tuning)**: Ray Tune saves the experiment state to storage at most every ~10 s by default,
  so a killed driver redoes trials finished since the last save (from their checkpoints; results are
  deterministic, so the outcome is unchanged, only work is repeated).
* **Added: one drift check at a time.** The drift-check deployment now has a concurrency limit of 1
  with `CANCEL_NEW` (the late runs of an outage are cancelled, not queued); the retraining deployment
  keeps `ENQUEUE` (a new episode's retraining must not be dropped).
* **Added: a crash detector.** `driftloop deploy`/`serve` install a proactive automation that marks a
  deployment run Crashed when 3 heartbeats (30 s each, set for workers and served runs) go missing.
* **Added: garbage collection of orphaned runs** (`driftloop artifacts gc`, write-once tombstone claim).
* Concurrent drift checks as *threads of one process* collide in matplotlib (not thread-safe) when
  plotting the p-value history; Prefect runners run each flow run in its own process, where this cannot
  happen. The catch-up test serialises the plot with a lock.
"""


def _nodeid(case: ET.Element) -> str:
    cls, name = case.get("classname", ""), case.get("name", "")
    parts = cls.split(".")
    # classname is the module path (tests.x.test_y) or module path + class name
    for i in range(len(parts), 0, -1):
        path = "/".join(parts[:i]) + ".py"
        if (ROOT / path).exists():
            return "::".join([path, *parts[i:], name])
    return f"{cls}::{name}"


def _results(junit: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        out[_nodeid(case)] = {"outcome": outcome, "seconds": float(case.get("time", 0))}
    return out


def _figures() -> dict[str, dict]:
    out = {}
    for f in sorted(FIGURES.glob("*.json")):
        doc = json.loads(f.read_text())
        out[doc["nodeid"]] = doc["figures"]
    return out


def _fmt(v) -> str:
    if isinstance(v, dict) and set(v) >= {"mode", "exit_code"}:
        return f"{v['mode']} (exit {v['exit_code']}, API state {','.join(v.get('flow_run_states', []))})"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _matching(results: dict[str, dict], test: str) -> list[tuple[str, dict]]:
    """Results of a node id, including its parametrized cases (``test[local]``, ``test[s3]``)."""
    return [(k, r) for k, r in results.items() if k == test or k.startswith(test + "[")]


def render(results: dict[str, dict], figures: dict[str, dict], command: str, wall: float) -> str:
    rows, counted = [], 0
    for area, scenario, criterion, tests in SCENARIOS:
        cells = []
        for t in tests:
            hits = _matching(results, t)
            short = t.split("::", 1)
            label = f"`{short[0].removeprefix('tests/')}::{short[1]}`" if len(short) == 2 else f"`{t}`"
            if not hits:
                cells.append((label, "not run", 0.0, ""))
                continue
            outcomes = sorted({r["outcome"] for _, r in hits})
            secs = sum(r["seconds"] for _, r in hits)
            fig = "; ".join(f"{k}={_fmt(v)}" for _, _ in hits[:1] for k, v in figures.get(hits[0][0], {}).items())
            cells.append((label + (f" ({len(hits)} cases)" if len(hits) > 1 else ""), "/".join(outcomes), secs, fig))
            counted += len(hits)
        tests_md = "<br>".join(c[0] for c in cells)
        result_md = "<br>".join(c[1] for c in cells)
        secs_md = "<br>".join(f"{c[2]:.1f}" for c in cells)
        figs = [c[3] for c in cells if c[3]]
        rows.append(
            f"| {area} | {scenario} | {criterion} | {tests_md} | {result_md} | {secs_md} | "
            f"{'<br>'.join(figs) if figs else 'pass/fail only (existing concern test)'} |"
        )
    outcomes = [r["outcome"] for r in results.values()]
    summary = ", ".join(
        f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "error", "skipped") if outcomes.count(o)
    )
    lines = [
        "# Reliability and security scenarios",
        "",
        "Generated by `scripts/reliability_report.py` from a pytest run (do not edit by hand; rerun the script).",
        "",
        f"* run: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {summary} in {wall:.0f} s",
        f"* command: `{command}`",
        "* figures: recorded by each scenario test (`tests/reliability/conftest.py`, `figures` fixture) in "
        "`test-output/reliability/figures/`; *objects lost* counts committed objects that a fault made "
        "unreadable or wrong (sha256-verified after the fault).",
        "",
        "| area | scenario | pass criterion | test | result | s | figures |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Not covered yet",
        "",
        *[f"* {x}" for x in NOT_COVERED],
        "",
        "## Security defaults",
        "",
        SECURITY_DEFAULTS,
        "## Findings from these scenarios",
        "",
        FINDINGS,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-only", action="store_true", help="run only tests/reliability")
    ap.add_argument("--doc", type=Path, default=DOC, help="where to write the markdown (default: docs/RELIABILITY.md)")
    ap.add_argument(
        "--from-junit",
        type=Path,
        action="append",
        default=None,
        help="render from this junit XML of an earlier run (e.g. the whole suite's "
        "test-output/junit.xml) and the figures it recorded, instead of running pytest; "
        "repeatable: a test in a later file replaces its result from an earlier one",
    )
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = ap.parse_args(argv)
    if args.from_junit is not None:
        missing = [p for p in args.from_junit if not p.is_file()]
        if missing:
            print(f"no junit XML at {', '.join(map(str, missing))}", file=sys.stderr)
            return 2
        results: dict[str, dict] = {}
        wall = 0.0
        for path in args.from_junit:
            root = ET.parse(path).getroot()
            suite = root if root.tag == "testsuite" else next(root.iter("testsuite"))
            wall += float(suite.get("time", 0))
            results.update(_results(path))
        sources = " ".join(f"--from-junit {p}" for p in args.from_junit)
        shown = (
            f"bash scripts/test.sh  (the whole suite), then python scripts/reliability_report.py {sources}"
            if len(args.from_junit) == 1
            else f"python scripts/reliability_report.py {sources}  (the runs those "
            "files record; a later file's results replace an earlier one's)"
        )
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(render(results, _figures(), shown, wall))
        print(f"wrote {args.doc}")
        return 0
    tests = ["tests/reliability"]
    if not args.new_only:
        tests += sorted({t for *_, ts in SCENARIOS for t in ts if not t.startswith("tests/reliability/")})
    if FIGURES.exists():
        shutil.rmtree(FIGURES)
    OUT.mkdir(parents=True, exist_ok=True)
    junit = OUT / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *tests,
        *args.pytest_args,
    ]
    started = dt.datetime.now().timestamp()
    rc = subprocess.call(cmd, cwd=ROOT)
    wall = dt.datetime.now().timestamp() - started
    if not junit.exists():
        print("pytest wrote no junit XML", file=sys.stderr)
        return rc or 1
    shown = "python -m pytest " + " ".join(t for t in cmd[cmd.index(f"--junitxml={junit}") + 1 :])
    if not args.new_only:
        shown = "python scripts/reliability_report.py  (tests/reliability + the referenced concern tests)"
    else:
        shown = "python scripts/reliability_report.py --new-only  (python -m pytest tests/reliability)"
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(_results(junit), _figures(), shown, wall))
    print(f"wrote {args.doc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
