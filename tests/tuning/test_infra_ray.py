"""infra/ray: the cluster configs parse, use the pinned Ray, and fit the tuning config's trials."""

import re
from pathlib import Path

import yaml

from tasks.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "ray"


def ray_pin() -> str:
    m = re.search(r'"ray\[tune\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert m, "pyproject.toml pins ray[tune]"
    return m.group(1)


def images(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("image", "head_image", "worker_image") and isinstance(v, str):
                out.append(v)
            out += images(v)
    elif isinstance(node, list):
        for v in node:
            out += images(v)
    return out


def test_launcher_config_parses_and_matches_the_pin():
    cfg = yaml.safe_load((INFRA / "cluster.yaml").read_text())
    pin = ray_pin()
    imgs = images(cfg)
    assert imgs and all(i.startswith(f"rayproject/ray:{pin}-py311-") for i in imgs)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(t["min_workers"] == 0 < t["max_workers"] for t in gpu_types)  # autoscaling
    assert cfg["docker"]["worker_image"].endswith("-gpu")
    # The trials' code on every node, and token authentication cluster-wide.
    assert cfg["file_mounts"]["/home/ray/driftloop"] == "." and "/home/ray/.ray/auth_token" in cfg["file_mounts"]
    assert any("pip install" in c and "-e ." in c for c in cfg["setup_commands"])
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        assert any(c.startswith("RAY_AUTH_MODE=token ray start") for c in cmds)


def test_kuberay_manifest_parses_and_matches_the_pin():
    docs = list(yaml.safe_load_all((INFRA / "raycluster.yaml").read_text()))
    assert len(docs) == 1
    rc = docs[0]
    pin = ray_pin()
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    assert rc["spec"]["rayVersion"] == pin and rc["spec"]["enableInTreeAutoscaling"] is True
    # Every pod runs the node image with driftloop installed (infra/ray/Dockerfile), built on Ray's at the pin.
    assert set(images(rc)) == {f"driftloop-ray:{pin}"}
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{pin}-py311-gpu" in dockerfile and "pip install --no-cache-dir ." in dockerfile
    (group,) = rc["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] == 0 < group["maxReplicas"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"] == "1"
    # Token authentication on every node, the token from a Secret.
    head = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    for c in (head, container):
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "driftloop-ray-token"


def test_gpu_worker_resources_fit_the_tuning_config():
    settings = load_settings(config_file=INFRA / "tuning-gpu.yaml")
    res = settings.tuning.resources_per_trial
    assert settings.tuning.ray_address == "auto" and isinstance(res.gpu, float) and 0 < res.gpu <= 1
    launcher = yaml.safe_load((INFRA / "cluster.yaml").read_text())
    worker = launcher["available_node_types"]["gpu_worker"]["resources"]
    rc = yaml.safe_load((INFRA / "raycluster.yaml").read_text())
    limits = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    for cpus, gpus in ((worker["CPU"], worker["GPU"]), (int(limits["cpu"]), int(limits["nvidia.com/gpu"]))):
        by_gpu = round(gpus / res.gpu)
        assert abs(gpus / res.gpu - by_gpu) < 1e-9, "the GPU share divides a node's GPUs evenly"
        assert cpus >= by_gpu * res.cpu, "a node has the CPUs for every trial its GPUs can hold"
