"""A real OCI registry on 127.0.0.1 for the publishing tests, and a tiny image to push through it.

``LocalRegistry`` runs the ``registry`` binary of distribution/distribution (built from the Go module
pinned in tools/pins.env by ``tools/build.sh registry``) on a free port with its storage in a scratch
directory, plain HTTP, no authentication, no tracing; ``stop()`` ends the process and nothing stays.

``tiny_oci_layout`` writes a minimal OCI image layout (one layer, one file, fixed timestamps): the
stand-in for the operator image where the real one (``make image``) has not been built.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from operator_proc import free_port

import helpers


def tool(name: str, *, how: str) -> str:
    return helpers.pinned_tool(name, how=how)


def ensure_debian_package(command: str, package: str) -> str:
    """``command`` from Debian's ``package``, installed once when missing (as root, with apt-get)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return tool(command, how=f"install Debian's {package}: apt-get install --no-install-recommends {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "-y", "-q", "--no-install-recommends", "install", package]
    if subprocess.run(install, capture_output=True, env=env, timeout=600, check=False).returncode != 0:
        subprocess.run(["apt-get", "-q", "update"], capture_output=True, env=env, timeout=600, check=False)
        subprocess.run(install, capture_output=True, env=env, timeout=600, check=False)
    return tool(command, how=f"apt-get install {package} failed")


class LocalRegistry:
    """distribution's registry on 127.0.0.1:<free port>."""

    def __init__(self, workdir: Path) -> None:
        self.binary = tool("registry", how="build it with: tools/build.sh registry")
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = workdir / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalRegistry:
        config = self.workdir / "config.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "version": 0.1,
                    "log": {"level": "info", "accesslog": {"disabled": True}},
                    "storage": {
                        "filesystem": {"rootdirectory": str(self.workdir / "data")},
                        "delete": {"enabled": True},
                    },
                    "http": {"addr": self.host},
                }
            )
        )
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_SDK_DISABLED": "true"}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"registry exited with {self._proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"registry did not answer on {self.host}:\n{self.logs()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        self._proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def get(self, path: str, *, accept: str = "") -> tuple[int, bytes, dict[str, str]]:
        request = urllib.request.Request(f"http://{self.host}{path}", headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def tiny_oci_layout(layout: Path, *, tag: str, version: str) -> str:
    """Write an OCI image layout holding one small linux/amd64 image; returns its manifest digest."""
    content = f"kube-changejob {version}: a stand-in for the operator image in the publishing tests\n".encode()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo("etc/kube-changejob-release")
        info.size, info.mtime, info.mode = len(content), 0, 0o644
        archive.addfile(info, io.BytesIO(content))
    layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"org.opencontainers.image.version": version}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes.getvalue()).hexdigest()}"]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, json.dumps(config).encode()),
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, layer)}],
    }
    descriptor = _blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **descriptor,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return str(descriptor["digest"])
