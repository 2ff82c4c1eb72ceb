"""What can be checked of infra/ without a container engine: the compose file parses, images match
the pins, ports and variables match what the code reads; the S3 policy grants what the drift check
needs and nothing that writes models."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

import yaml

from tasks.settings import Settings, env_layer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose" / "docker-compose.yml"


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([0-9.]+)", d)
        if m:
            out[m.group(1).lower()] = m.group(3)
    return out


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_parses_and_has_every_service():
    svc = _compose()["services"]
    assert {
        "postgres",
        "prefect-server",
        "prefect-worker",
        "minio",
        "minio-init",
        "ray-head",
        "ray-gpu-worker",
        "flower-superlink",
    } <= set(svc)
    assert "postgresql+asyncpg://" in svc["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert svc["ray-gpu-worker"]["runtime"] == "nvidia"
    assert svc["ray-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "mc mb --ignore-existing" in svc["minio-init"]["entrypoint"]
    assert "--pool driftloop-process" in svc["prefect-worker"]["command"]


def test_images_match_the_pins():
    pins = _pins()
    images = {name: s["image"] for name, s in _compose()["services"].items()}
    assert images["prefect-server"].startswith(f"prefecthq/prefect:{pins['prefect']}-python3.11")
    assert images["prefect-worker"] == images["prefect-server"]
    assert images["ray-head"].startswith(f"rayproject/ray:{pins['ray']}-py311")
    assert images["ray-gpu-worker"].startswith(f"rayproject/ray:{pins['ray']}-py311-gpu")
    assert images["flower-superlink"] == f"flwr/superlink:{pins['flwr']}"
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), f"{name} is not pinned: {image}"


def test_ports_match_what_the_code_and_docs_use():
    svc = _compose()["services"]
    host_ports = {int(p.split(":")[1]) for s in svc.values() for p in s.get("ports", [])}
    # Prefect API/UI, MinIO S3 + console, Ray dashboard + client, Flower Fleet + Control API
    assert {4200, 9000, 9001, 8265, 10001, 9092, 9093} <= host_ports
    assert all(p.startswith("127.0.0.1:") for s in svc.values() for p in s.get("ports", []))
    env = svc["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["DRIFTLOOP_STORE__ENDPOINT_URL"] == "http://minio:9000"
    assert env["DRIFTLOOP_TUNING__RAY_ADDRESS"].endswith(":10001")


def test_driftloop_variables_are_keys_of_the_settings_tree():
    env = _compose()["services"]["prefect-worker"]["environment"]
    dl = {k: "x" for k in env if k.startswith("DRIFTLOOP_")}
    assert dl, "the worker gets no DRIFTLOOP_* configuration"
    tree, _ = env_layer(dl)
    fields = Settings.model_fields
    for dotted in (".".join(k[len("DRIFTLOOP_") :].lower().split("__")) for k in dl):
        section, key = dotted.split(".")
        assert section in fields, dotted
        assert key in fields[section].annotation.model_fields, f"{dotted} is not a configuration key"


def test_env_example_names_every_required_variable():
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = ROOT / "infra" / "compose" / ".env.example"
    defined = {
        line.split("=", 1)[0] for line in example.read_text().splitlines() if "=" in line and not line.startswith("#")
    }
    assert used <= defined, used - defined


def _allowed(policy: dict, action: str, arn: str) -> bool:
    """IAM evaluation for object actions: an explicit Deny wins, else any Allow."""

    def hits(st):
        acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        return action in acts and any(fnmatch.fnmatchcase(arn, r) for r in res)

    if any(st["Effect"] == "Deny" and hits(st) for st in policy["Statement"]):
        return False
    return any(st["Effect"] == "Allow" and hits(st) for st in policy["Statement"])


def test_drift_check_policy_reads_models_and_writes_only_reports():
    from tasks.data.quarantine import QUARANTINE_PREFIX
    from tasks.store.artifacts import RUNS_PREFIX

    policy = json.loads((ROOT / "infra" / "s3" / "drift-check-policy.json").read_text())
    obj = "arn:aws:s3:::driftloop/driftloop/"
    model = "digits-classifier"
    reads = [
        f"{obj}registry/{model}/versions.json",
        f"{obj}{RUNS_PREFIX}training-20250101T000000Z-ab12/model.safetensors",
        f"{obj}drift/{model}/episode.json",
        "arn:aws:s3:::driftloop/batches/batch-00001.npz",
    ]
    writes = [
        f"{obj}drift/{model}/checks/batch-00001.json",
        f"{obj}drift/{model}/episode.json",
        f"{obj}{QUARANTINE_PREFIX}/batch-00001/report.json",
    ]
    forbidden = [
        f"{obj}registry/{model}/versions.json",
        f"{obj}{RUNS_PREFIX}training-x/model.safetensors",
        "arn:aws:s3:::driftloop/batches/batch-00001.npz",
        "arn:aws:s3:::other-bucket/x",
    ]
    assert all(_allowed(policy, "s3:GetObject", a) for a in reads)
    assert all(_allowed(policy, "s3:PutObject", a) for a in writes)
    assert not any(_allowed(policy, "s3:PutObject", a) for a in forbidden)
    assert not any(_allowed(policy, "s3:DeleteObject", a) for a in forbidden + writes)
    assert not _allowed(policy, "s3:GetObject", "arn:aws:s3:::other-bucket/x")
