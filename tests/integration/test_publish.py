"""Publishing, done here as the release workflow does it, against a real OCI registry on 127.0.0.1.

The registry is distribution's (pinned Go module, ``tools/build.sh registry``), started on a free port
for this module and stopped after. The image goes in and out by digest with skopeo (Debian's
package): the operator image of ``make image`` when it has been built (``build/image/archives/
operator.tar``, or an archive named by ``CHANGEJOB_IMAGE_ARCHIVE``), a tiny OCI image made here
otherwise. The chart is packaged by ``tools/release.py`` with that digest injected (what the release
workflow runs), pushed with ``helm push``, pulled back byte for byte, and installed from the registry
onto the local cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oci_registry import LocalRegistry, ensure_debian_package, tiny_oci_layout, tool
from test_chart_install import delete_admission_policies

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
BUILT_IMAGE = Path(os.environ.get("CHANGEJOB_IMAGE_ARCHIVE", REPO / "build" / "image" / "archives" / "operator.tar"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    local = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    try:
        yield local
    finally:
        local.stop()
        print(f"--- registry log (tail) ---\n{local.logs()[-2000:]}")


@pytest.fixture(scope="module")
def skopeo() -> str:
    return ensure_debian_package("skopeo", "skopeo")


def run(*args: str, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def image_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A skopeo source reference: the built operator image, else a tiny OCI layout made here."""
    if BUILT_IMAGE.is_file():
        return f"docker-archive:{BUILT_IMAGE}"
    layout = tmp_path_factory.mktemp("image") / "layout"
    layout.mkdir()
    tiny_oci_layout(layout, tag=VERSION, version=VERSION)
    return f"oci:{layout}:{VERSION}"


@pytest.fixture(scope="module")
def pushed_image(
    registry: LocalRegistry, skopeo: str, image_source: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Push the image as <registry>/kube-changejob:<version>; returns the digest the registry holds."""
    digest_file = tmp_path_factory.mktemp("push") / "digest"
    run(
        skopeo,
        "copy",
        "--dest-tls-verify=false",
        f"--digestfile={digest_file}",
        image_source,
        f"docker://{registry.host}/kube-changejob:{VERSION}",
    )
    digest = digest_file.read_text().strip()
    assert digest.startswith("sha256:") and len(digest) == 71, digest
    return digest


def test_image_round_trip_by_digest(registry: LocalRegistry, skopeo: str, pushed_image: str, tmp_path: Path) -> None:
    reference = f"{registry.host}/kube-changejob@{pushed_image}"
    raw = run(skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{reference}").stdout.encode()
    assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == pushed_image  # content-addressed
    tagged = json.loads(
        run(skopeo, "inspect", "--tls-verify=false", f"docker://{registry.host}/kube-changejob:{VERSION}").stdout
    )
    assert tagged["Digest"] == pushed_image
    # Pulled by digest, the manifest is the very bytes that were pushed, and every blob arrives.
    pulled = tmp_path / "pulled"
    run(skopeo, "copy", "--src-tls-verify=false", f"docker://{reference}", f"dir:{pulled}")
    assert f"sha256:{hashlib.sha256((pulled / 'manifest.json').read_bytes()).hexdigest()}" == pushed_image
    manifest = json.loads((pulled / "manifest.json").read_text())
    for blob in [manifest["config"], *manifest["layers"]]:
        data = (pulled / blob["digest"].split(":", 1)[1]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == blob["digest"].split(":", 1)[1]


def test_an_unknown_digest_is_refused(registry: LocalRegistry, skopeo: str, pushed_image: str, tmp_path: Path) -> None:
    wrong = "sha256:" + "0" * 64
    result = subprocess.run(
        [
            skopeo,
            "copy",
            "--src-tls-verify=false",
            f"docker://{registry.host}/kube-changejob@{wrong}",
            f"dir:{tmp_path}/x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "manifest unknown" in result.stderr.lower() or "not found" in result.stderr.lower(), result.stderr


@pytest.fixture(scope="module")
def helm_binary() -> str:
    return tool("helm", how="build it with: tools/build.sh helm")


@pytest.fixture
def helm_env(tmp_path: Path, cluster: Any) -> dict[str, str]:
    return {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm" / "config"),
        "HELM_DATA_HOME": str(tmp_path / "helm" / "data"),
    }


def test_chart_published_with_the_image_digest_and_installed_from_the_registry(
    registry: LocalRegistry,
    pushed_image: str,
    helm_binary: str,
    helm_env: dict[str, str],
    cluster: Any,
    tmp_path: Path,
) -> None:
    image = f"{registry.host}/kube-changejob"
    packaged = Path(
        run(
            sys.executable,
            str(REPO / "tools" / "release.py"),
            "package-chart",
            f"--version={VERSION}",
            f"--image={image}",
            f"--digest={pushed_image}",
            f"--out={tmp_path / 'packaged'}",
            f"--helm={helm_binary}",
        ).stdout.strip()
    )
    assert packaged.name == f"kube-changejob-{VERSION}.tgz"

    pushed = run(helm_binary, "push", str(packaged), f"oci://{registry.host}/charts", "--plain-http", env=helm_env)
    said = pushed.stdout + pushed.stderr
    assert f"{registry.host}/charts/kube-changejob:{VERSION}" in said, said
    chart_digest = next(line.split()[-1] for line in said.splitlines() if line.startswith("Digest:"))
    status, body, headers = registry.get(
        f"/v2/charts/kube-changejob/manifests/{VERSION}", accept="application/vnd.oci.image.manifest.v1+json"
    )
    assert status == 200 and headers.get("Docker-Content-Digest") == chart_digest
    assert json.loads(body)["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"

    pulled_dir = tmp_path / "pulled"
    pulled_dir.mkdir()
    run(
        helm_binary,
        "pull",
        f"oci://{registry.host}/charts/kube-changejob",
        f"--version={VERSION}",
        "--plain-http",
        f"--destination={pulled_dir}",
        env=helm_env,
    )
    assert (pulled_dir / packaged.name).read_bytes() == packaged.read_bytes()
    shown = run(
        helm_binary,
        "show",
        "chart",
        f"oci://{registry.host}/charts/kube-changejob",
        f"--version={VERSION}",
        "--plain-http",
        env=helm_env,
    ).stdout
    assert f"appVersion: {VERSION}" in shown and f"version: {VERSION}" in shown

    release = f"pub-{uuid.uuid4().hex[:6]}"
    namespace = f"ctj-{release}"
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    try:
        run(
            helm_binary,
            "install",
            release,
            f"oci://{registry.host}/charts/kube-changejob",
            f"--version={VERSION}",
            "--plain-http",
            f"--namespace={namespace}",
            "--create-namespace",
            "--take-ownership",
            "--force-conflicts",
            "--set-json",
            f"webhook.namespaceSelector={json.dumps(selector)}",
            env=helm_env,
        )
        deployment = json.loads(
            cluster.kubectl(
                "get", "deployment", f"{release}-kube-changejob-controller-manager", "-n", namespace, "-o", "json"
            ).stdout
        )
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"{image}@{pushed_image}"
        listed = json.loads(run(helm_binary, "list", "-n", namespace, "-o", "json", env=helm_env).stdout)
        assert [(r["name"], r["chart"], r["app_version"]) for r in listed] == [
            (release, f"kube-changejob-{VERSION}", VERSION)
        ]
    finally:
        subprocess.run(
            [helm_binary, "uninstall", release, "-n", namespace, "--wait=false"],
            capture_output=True,
            env=helm_env,
            timeout=120,
            check=False,
        )
        # The admission policies are kept with the CRD on uninstall (crds.keep): remove this release's.
        delete_admission_policies(cluster.kubectl, release)
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
