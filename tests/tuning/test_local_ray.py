"""The embedded local Ray: tuning starts its own, whatever else is on the machine."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
from tasks.tuning.config import TuningConfig
from tasks.tuning.runtime import connect_ray
import ray
assert connect_ray(TuningConfig()) is True
node = ray._private.worker._global_node
print("SESSION", node.get_session_dir_path(), "CPUS", ray.cluster_resources().get("CPU"))
ray.shutdown()
"""


@pytest.mark.integration
def test_stale_ray_current_cluster_file_does_not_redirect_the_local_ray():
    """A `ray start` long gone leaves Ray's ray_current_cluster file behind (here in RAY_TMPDIR, so the
    machine's /tmp/ray is left alone); a plain ray.init() would try to join that dead address."""
    # Short: Ray's socket paths under it must stay below 108 bytes (pytest's tmp_path is too long).
    tmp_path = Path(tempfile.mkdtemp(prefix="dlstale-", dir="/tmp"))
    try:
        _run_probe(tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_probe(tmp_path: Path) -> None:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead}")
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("SESSION")][-1]
    assert str(tmp_path) in line.split()[1]  # a new instance, in its own session directory
    assert float(line.split()[3]) == os.cpu_count()
