"""``kubectl-changejob`` without a cluster: command line, kubeconfig and namespace, error lines, exit codes.

The installed console script is run as a user runs it where the whole process matters (one line on
stderr, the exit code, no traceback); the choice of namespace and the mapping of API errors are
checked on the functions. What needs an API server is in tests/integration/test_plugin.py.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from changejob import __version__
from changejob.kube import transport
from changejob.plugin import client, main

pytestmark = pytest.mark.unit

SCRIPT = shutil.which("kubectl-changejob", path=str(Path(sys.executable).parent))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None, "kubectl-changejob is not installed in this virtualenv (pip install -e .)"
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "POD_NAMESPACE")}
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, check=False, env={**base, **(env or {})}
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def kubeconfig(
    path: Path, *, server: str = "https://127.0.0.1:1", cluster: str = "c", contexts: dict[str, str | None]
) -> Path:
    """A kubeconfig with one cluster and one context per entry (name -> namespace); the first is current."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": cluster, "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": name, "context": {"cluster": cluster, "user": "u", **({"namespace": ns} if ns else {})}}
                    for name, ns in contexts.items()
                ],
                "current-context": next(iter(contexts)),
            }
        )
    )
    return path


# --------------------------------------------------------------------------------------------------
# Command line


def test_help_speaks_of_kubectl_changejob_and_lists_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kubectl changejob ")
    for text in ("trigger", "suspend", "resume", "why", "-n NAME, --namespace NAME", "--context", "--kubeconfig"):
        assert text in result.stdout
    assert "3  the ChangeTriggeredJob does not exist" in result.stdout


def test_no_command_shows_help_like_kubectl() -> None:
    result = run()
    assert result.returncode == 0 and result.stdout.startswith("usage: kubectl changejob ")


def test_version() -> None:
    result = run("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"kubectl-changejob {__version__}")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("why",), "the following arguments are required: NAME"),
        (("frobnicate", "x"), "invalid choice: 'frobnicate'"),
        (("why", "x", "--bogus"), "unrecognized arguments: --bogus"),
        (("trigger", "x", "--timeout=soon"), "--timeout: invalid duration 'soon'"),
        (("trigger", "x", "-o", "yaml"), "invalid choice: 'yaml'"),
        (("why", "x", "-n"), "expected one argument"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args: tuple[str, ...], fragment: str) -> None:
    line = one_line(run(*args), client.ExitCode.USAGE, fragment)
    assert line.endswith("(see 'kubectl changejob --help')")


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "web", "--context", "ctx", "why", "x"],
        ["why", "x", "-n", "web", "--context", "ctx"],
        ["--namespace=web", "why", "--context=ctx", "x"],
    ],
)
def test_kubectl_flags_go_before_or_after_the_command(argv: list[str]) -> None:
    args = main._parser().parse_args(argv)
    assert (args.command, args.name, args.namespace, args.context) == ("why", "x", "web", "ctx")
    assert not hasattr(args, "kubeconfig")  # unset flags stay unset: the kubeconfig decides


def test_trigger_request_values_are_fresh_rfc3339_times() -> None:
    now = datetime.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC)
    values = {main.request_value(now) for _ in range(100)}
    assert len(values) == 100
    value = values.pop()
    assert value.startswith("2026-05-01T12:00:00.123456Z-") and len(value) == len("2026-05-01T12:00:00.123456Z-") + 12


# --------------------------------------------------------------------------------------------------
# Kubeconfig and namespace, as kubectl chooses them


def test_namespace_from_the_current_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = kubeconfig(tmp_path / "config", contexts={"dev": "team-a", "prod": "team-b"})
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert client.connect(kubeconfig=str(path), context=None, namespace=None).namespace == "team-a"
    assert client.connect(kubeconfig=str(path), context="prod", namespace=None).namespace == "team-b"
    assert client.connect(kubeconfig=str(path), context="prod", namespace="mine").namespace == "mine"


def test_namespace_defaults_to_default(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", contexts={"dev": None})
    assert client.connect(kubeconfig=str(path), context=None, namespace=None).namespace == "default"


def test_kubeconfig_list_is_merged_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = kubeconfig(tmp_path / "a", contexts={"dev": "team-a"})
    second = kubeconfig(tmp_path / "b", server="https://127.0.0.2:1", cluster="c2", contexts={"other": "team-c"})
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    session = client.connect(kubeconfig=None, context="other", namespace=None)
    assert session.namespace == "team-c"
    assert session.transport.url("") == "https://127.0.0.2:1"
    # The first file that sets the current context wins, as in kubectl.
    assert client.connect(kubeconfig=None, context=None, namespace=None).namespace == "team-a"


def test_unknown_context_is_one_clear_failure(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", contexts={"dev": None})
    with pytest.raises(client.Failure) as caught:
        client.connect(kubeconfig=str(path), context="nope", namespace="x")
    assert caught.value.code == client.ExitCode.ERROR
    assert caught.value.message == f'context "nope" does not exist in kubeconfig {path}'


def test_in_cluster_namespace_comes_from_pod_namespace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("POD_NAMESPACE", "from-pod")
    # No service-account token here, so the in-cluster loader refuses; the message says what to do.
    with pytest.raises(client.Failure) as caught:
        client.connect(kubeconfig=None, context=None, namespace=None)
    assert "not running in a Pod" in caught.value.message
    assert client._pod_namespace() == "from-pod"


def test_missing_kubeconfig_file(tmp_path: Path) -> None:
    one_line(run("why", "x", f"--kubeconfig={tmp_path / 'nope'}"), 1, f"kubeconfig file {tmp_path / 'nope'} does not")


def test_no_kubeconfig_at_all(tmp_path: Path) -> None:
    result = run("why", "x", env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)})
    one_line(result, 1, "no kubeconfig found", "pass --kubeconfig=PATH or set KUBECONFIG")


def test_broken_kubeconfig(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: missing\n")
    one_line(run("why", "x", f"--kubeconfig={path}"), 1, f"cannot use kubeconfig {path}")


def test_unreachable_api_server(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", contexts={"dev": "ns"})
    one_line(run("why", "x", f"--kubeconfig={path}"), 1, "cannot reach the API server at https://127.0.0.1:1")


# --------------------------------------------------------------------------------------------------
# API errors -> one line and an exit code


def session(tmp_path: Path) -> client.Session:
    path = kubeconfig(tmp_path / "config", contexts={"dev": "ns"})
    return client.connect(kubeconfig=str(path), context=None, namespace=None)


def test_long_api_messages_keep_their_start_and_end(tmp_path: Path) -> None:
    text = "patch: Invalid value: " + "x" * 5000 + ': strict decoding error: unknown field "spec.bogus"'
    found = client.failure(transport.ApiError(422, "Invalid", text), session(tmp_path), name="x")
    assert len(found.message) <= client.MESSAGE_LIMIT + len("422 Invalid: ")
    assert found.message.startswith("422 Invalid: patch: Invalid value: xxx")
    assert found.message.endswith('unknown field "spec.bogus"') and " ... " in found.message


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            transport.ApiError(404, "NotFound", "x", {"details": {"name": "x", "kind": "changetriggeredjobs"}}),
            client.ExitCode.NOT_FOUND,
            'changetriggeredjobs.triggers.changejob.dev "x" not found in namespace "ns"',
        ),
        (
            transport.ApiError(404, "NotFound", "the server could not find the requested resource"),
            client.ExitCode.ERROR,
            "this cluster does not serve changetriggeredjobs.triggers.changejob.dev (version v1alpha): is the "
            "kube-changejob CRD installed?",
        ),
        (
            transport.ApiError(403, "Forbidden", 'changetriggeredjobs "x" is forbidden: User "bob" cannot get'),
            client.ExitCode.FORBIDDEN,
            'changetriggeredjobs "x" is forbidden: User "bob" cannot get',
        ),
        (
            transport.ApiError(401, "Unauthorized", ""),
            client.ExitCode.ERROR,
            "the API server at https://127.0.0.1:1 rejected the credentials (401 Unauthorized)",
        ),
        (
            transport.ApiError(0, "ConnectionError", "... Connection refused ..."),
            client.ExitCode.ERROR,
            "cannot reach the API server at https://127.0.0.1:1 (connection refused): check that the cluster is "
            "running and that --kubeconfig/--context point at it",
        ),
        (
            transport.ApiError(422, "Invalid", "spec.suspend:\n  Invalid value"),
            client.ExitCode.ERROR,
            "422 Invalid: spec.suspend: Invalid value",
        ),
    ],
)
def test_api_errors(tmp_path: Path, error: transport.ApiError, code: client.ExitCode, message: str) -> None:
    found = client.failure(error, session(tmp_path), name="x")
    assert (found.code, found.message) == (code, message)


# --------------------------------------------------------------------------------------------------
# --wait, on a fake transport: the watch's events, its end, a 410 and a deletion


class FakeTransport:
    """Answers GETs with the next object of ``reads`` and each watch with the next event list."""

    def __init__(self, reads: list[dict[str, object]], watches: list[list[dict[str, object]]]) -> None:
        self.reads, self.watches = reads, watches
        self.queries: list[dict[str, object]] = []

    def url(self, path: str) -> str:
        return "https://fake" + path

    def request(self, method: str, path: str, **kwargs: object) -> dict[str, object]:
        assert method == "GET"
        return self.reads.pop(0)

    def stream(self, path: str, *, query: dict[str, object], read_timeout: float) -> object:
        self.queries.append(query)
        if not self.watches:
            raise transport.ApiError(0, "Timeout", "silent")
        return iter(self.watches.pop(0))


def obj(rv: str, request: str | None = None, *, suspend: bool = False) -> dict[str, object]:
    status = {"lastTriggerRequest": request} if request else {}
    return {"metadata": {"name": "x", "resourceVersion": rv}, "spec": {"suspend": suspend}, "status": status}


def waiter(fake: FakeTransport, start: dict[str, object], *, timeout: float = 30) -> dict[str, object]:
    session = client.Session(transport=fake, namespace="ns")  # type: ignore[arg-type]
    return client.wait_for_request(session, start, "r1", timeout=timeout)


def test_wait_returns_on_the_event_that_records_the_request() -> None:
    fake = FakeTransport(
        [], [[{"type": "MODIFIED", "object": obj("2")}, {"type": "MODIFIED", "object": obj("3", "r1")}]]
    )
    assert waiter(fake, obj("1"))["metadata"] == {"name": "x", "resourceVersion": "3"}
    assert fake.queries[0]["resourceVersion"] == "1" and fake.queries[0]["fieldSelector"] == "metadata.name=x"


def test_wait_resumes_after_a_bookmark_the_end_of_a_watch_and_a_410() -> None:
    fake = FakeTransport(
        [obj("20")],
        [
            [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}],  # then the watch ends
            [{"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}],
            [{"type": "MODIFIED", "object": obj("21", "r1")}],
        ],
    )
    assert waiter(fake, obj("1"))["metadata"]["resourceVersion"] == "21"  # type: ignore[index]
    assert [q["resourceVersion"] for q in fake.queries] == ["1", "9", "20"]


def test_wait_sees_a_deletion() -> None:
    fake = FakeTransport([], [[{"type": "DELETED", "object": obj("2")}]])
    with pytest.raises(client.Failure) as caught:
        waiter(fake, obj("1"))
    assert caught.value.code == client.ExitCode.NOT_FOUND and "was deleted while waiting" in caught.value.message


def test_wait_times_out_with_the_reason() -> None:
    with pytest.raises(client.Failure) as caught:
        waiter(FakeTransport([], []), obj("1", suspend=True), timeout=0)
    assert caught.value.code == client.ExitCode.TIMEOUT
    assert caught.value.message == (
        "timed out after 0s waiting for x to handle trigger request r1 (status.lastTriggerRequest: unset): "
        "it is suspended: the request is handled on resume"
    )


def test_wait_returns_at_once_when_already_handled() -> None:
    assert waiter(FakeTransport([], []), obj("1", "r1"), timeout=0)["metadata"]["resourceVersion"] == "1"  # type: ignore[index]
