"""Operator configuration: flags, environment, durations, validation and the exit code of bad input.

``cli.parse`` turns ``kube-changejob run --flag=value ...`` into :class:`settings.Settings`; flags
override ``CHANGEJOB_*`` environment variables (and the guide's ``POLL_INTERVAL``), which override
defaults. Invalid input must stop the process before it touches the cluster, with exit code 2 and a
message naming the offending setting.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import typing
from datetime import timedelta
from pathlib import Path

import pytest

from changejob import cli, preflight, settings

pytestmark = pytest.mark.unit

OPERATOR_SRC = Path(__file__).resolve().parents[2] / "operator"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment the tests happen to run in."""
    for name in list(os.environ):
        if name.upper().startswith("CHANGEJOB_") or name.upper() in ("POLL_INTERVAL", "POD_NAMESPACE", "POD_NAME"):
            monkeypatch.delenv(name)


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``cli.main(argv)`` for input that must be rejected: its exit code and what it printed to stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse exits by itself on unknown flags and missing values
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Defaults and flags


def test_defaults() -> None:
    config = cli.parse(["run"])
    assert config.kubeconfig is None and config.context is None
    assert config.namespaces == []
    assert config.poll_interval == timedelta(seconds=60)
    assert config.log_level == "info" and config.log_format == "text"
    assert config.metrics_bind_address == ":8080"
    assert config.health_probe_bind_address == ":8081"
    assert config.leader_elect is False
    assert config.leader_elect_lease_duration == timedelta(seconds=15)
    assert config.leader_elect_renew_deadline == timedelta(seconds=10)
    assert config.leader_elect_retry_period == timedelta(seconds=2)
    assert config.shards == 16 and config.workers == 8
    assert config.webhook_port == 0


def _help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_setting_has_a_flag_with_description_default_and_choices(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _help_text(capsys)
    assert "CHANGEJOB_" in shown and "POLL_INTERVAL" in shown
    entries = re.split(r" (?=--[a-z-]+ )", shown.split("show this help message and exit", 1)[1].split("exit codes:")[0])
    by_flag = {entry.split()[0]: entry for entry in entries if entry.startswith("--")}
    for name, field in settings.Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in by_flag, flag
        entry = by_flag[flag].strip()
        assert field.description, f"{flag} has no description"
        assert " ".join(field.description.split()) in entry, entry
        assert re.search(r"\(default: [^)]+\)$", entry), entry
        if (
            choices := typing.get_args(field.annotation)
            if typing.get_origin(field.annotation) is typing.Literal
            else ()
        ):
            assert "one of " + ", ".join(choices) in entry, entry
    assert by_flag["--poll-interval"].endswith("(default: 1m)")
    assert (
        by_flag["--leader-elect"].startswith("--leader-elect [BOOL]")
        and "(default: false)" in by_flag["--leader-elect"]
    )
    assert by_flag["--metrics-bind-address"].endswith("(default: :8080)")
    assert "(default: $POD_NAMESPACE," in by_flag["--leader-election-namespace"]


def test_help_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    shown = _help_text(capsys)
    listed = [int(code) for code in re.findall(r" (\d) [a-z]", shown.split("exit codes:", 1)[1])]
    assert listed == [int(code) for code in preflight.ExitCode]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--leader-elect"], True),
        (["--leader-elect=true"], True),
        (["--leader-elect=false"], False),
        (["--leader-elect=False"], False),
        (["--leader-elect", "--shards=4"], True),
        (["--shards=4", "--leader-elect"], True),
        (["--leader-elect", "false"], False),
        ([], False),
    ],
)
def test_boolean_flags_work_bare_and_with_a_value(argv: list[str], expected: bool) -> None:
    assert cli.parse(["run", *argv]).leader_elect is expected


def test_bare_boolean_flag_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEJOB_LEADER_ELECT", "false")
    assert cli.parse(["run", "--leader-elect"]).leader_elect is True


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, seconds=5), "1h5s"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(0), "0s"),
    ],
)
def test_durations_are_shown_in_go_syntax(value: timedelta, text: str) -> None:
    assert cli.format_duration(value) == text
    assert cli.parse(["run", f"--watch-timeout={text}"]).watch_timeout == value  # reads back what help shows


def test_flags_are_parsed() -> None:
    config = cli.parse(
        [
            "run",
            "--kubeconfig=/tmp/kc.yaml",
            "--context",
            "dev",
            "--namespaces=team-a, team-b",
            "--poll-interval=1m30s",
            "--log-level=debug",
            "--log-format=json",
            "--metrics-bind-address=127.0.0.1:9000",
            "--health-probe-bind-address=0",
            "--leader-elect=true",
            "--leader-elect-lease-duration=20s",
            "--leader-elect-renew-deadline=15s",
            "--leader-elect-retry-period=3s",
            "--leader-election-namespace=ops",
            "--shards=32",
            "--identity=replica-1",
            "--workers=12",
            "--webhook-port=9443",
            "--webhook-extra-sans=a.example,b.example",
        ]
    )
    assert config.kubeconfig == "/tmp/kc.yaml" and config.context == "dev"
    assert config.namespaces == ["team-a", "team-b"]
    assert config.poll_interval == timedelta(minutes=1, seconds=30)
    assert (config.log_level, config.log_format) == ("debug", "json")
    assert config.metrics_bind_address == "127.0.0.1:9000"
    assert config.health_probe_bind_address == "0"
    assert config.leader_elect is True
    assert config.leader_elect_lease_duration == timedelta(seconds=20)
    assert config.leader_elect_renew_deadline == timedelta(seconds=15)
    assert config.leader_elect_retry_period == timedelta(seconds=3)
    assert config.leader_election_namespace == "ops"
    assert (config.shards, config.identity, config.workers, config.webhook_port) == (32, "replica-1", 12, 9443)
    assert config.webhook_extra_sans == ["a.example", "b.example"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("2m0.25s", timedelta(minutes=2, milliseconds=250)),
    ],
)
def test_durations_use_go_syntax(text: str, expected: timedelta) -> None:
    assert cli.parse(["run", f"--poll-interval={text}"]).poll_interval == expected
    assert cli.parse(["run", f"--watch-timeout={text}"]).watch_timeout == expected


# --------------------------------------------------------------------------------------------------
# Environment


def test_environment_sets_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEJOB_NAMESPACES", "a, b,,c")
    monkeypatch.setenv("CHANGEJOB_LOG_LEVEL", "warning")
    monkeypatch.setenv("CHANGEJOB_LEADER_ELECT", "true")
    monkeypatch.setenv("CHANGEJOB_SHARDS", "64")
    monkeypatch.setenv("CHANGEJOB_LEADER_ELECT_RETRY_PERIOD", "1s")
    config = cli.parse(["run"])
    assert config.namespaces == ["a", "b", "c"]
    assert config.log_level == "warning"
    assert config.leader_elect is True
    assert config.shards == 64
    assert config.leader_elect_retry_period == timedelta(seconds=1)


def test_guide_poll_interval_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INTERVAL", "5s")
    assert cli.parse(["run"]).poll_interval == timedelta(seconds=5)


def test_prefixed_poll_interval_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEJOB_POLL_INTERVAL", "7s")
    assert cli.parse(["run"]).poll_interval == timedelta(seconds=7)


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_INTERVAL", "5s")
    monkeypatch.setenv("CHANGEJOB_WORKERS", "2")
    monkeypatch.setenv("CHANGEJOB_NAMESPACES", "from-env")
    config = cli.parse(["run", "--poll-interval=90s", "--workers=6", "--namespaces=from-flag"])
    assert config.poll_interval == timedelta(seconds=90)
    assert config.workers == 6
    assert config.namespaces == ["from-flag"]


def test_pod_environment_gives_namespace_and_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "changejob-ops")
    monkeypatch.setenv("POD_NAME", "kube-changejob-7d9f-abcde")
    config = cli.parse(["run"])
    assert config.leader_election_namespace == "changejob-ops"
    assert config.identity == "kube-changejob-7d9f-abcde"


def test_identity_defaults_to_host_and_pid() -> None:
    assert cli.parse(["run"]).identity == f"{socket.gethostname()}-{os.getpid()}"


# --------------------------------------------------------------------------------------------------
# Leader-election timing: lease > renew deadline > 1.2 x retry period (client-go's rule)


def test_election_timing_accepts_the_boundary() -> None:
    config = cli.parse(
        [
            "run",
            "--leader-elect-lease-duration=3s",
            "--leader-elect-renew-deadline=2401ms",
            "--leader-elect-retry-period=2s",
        ]
    )
    assert config.leader_elect_renew_deadline == timedelta(milliseconds=2401)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--leader-elect-lease-duration=10s", "--leader-elect-renew-deadline=10s"],
            "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline",
        ),
        (
            ["--leader-elect-lease-duration=5s", "--leader-elect-renew-deadline=10s"],
            "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline",
        ),
        (
            ["--leader-elect-renew-deadline=2400ms", "--leader-elect-retry-period=2s"],
            "--leader-elect-renew-deadline must be greater than 1.2 x --leader-elect-retry-period",
        ),
        (
            ["--leader-elect-retry-period=9s"],
            "--leader-elect-renew-deadline must be greater than 1.2 x --leader-elect-retry-period",
        ),
    ],
)
def test_election_timing_is_validated(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="must be greater than"):
        cli.parse(["run", *argv])
    code, err = run_main(["run", *argv], capsys)
    assert code == 2
    assert message in err
    assert err.startswith("kube-changejob: invalid")


def test_election_timing_from_environment_is_validated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHANGEJOB_LEADER_ELECT_RETRY_PERIOD", "10s")
    code, err = run_main(["run"], capsys)
    assert code == 2
    assert "1.2 x --leader-elect-retry-period" in err


# --------------------------------------------------------------------------------------------------
# Bad values: exit code 2 and a message naming the setting, before any cluster access


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--poll-interval=abc"], ("--poll-interval", "invalid duration 'abc'")),
        (["--poll-interval=30"], ("--poll-interval", "invalid duration '30'")),
        (["--poll-interval=-5s"], ("--poll-interval", "must not be negative")),
        (["--poll-interval=0s"], ("--poll-interval must be positive",)),
        (["--watch-timeout=5 minutes"], ("--watch-timeout", "invalid duration")),
        (["--workers=0"], ("--workers", "greater than or equal to 1")),
        (["--workers=65"], ("--workers", "less than or equal to 64")),
        (["--shards=x"], ("--shards", "valid integer")),
        (["--shards=0"], ("--shards", "greater than or equal to 1")),
        (["--log-level=trace"], ("--log-level", "'debug', 'info', 'warning' or 'error'")),
        (["--log-format=xml"], ("--log-format", "'text' or 'json'")),
        (["--webhook-port=70000"], ("--webhook-port", "less than or equal to 65535")),
        (["--webhook-cert-mode=acme"], ("--webhook-cert-mode", "self-signed")),
        (["--leader-elect=maybe"], ("--leader-elect", "valid boolean")),
    ],
)
def test_bad_flag_values_exit_2(
    argv: list[str], fragments: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["run", *argv], capsys)
    assert code == 2, err
    assert err.startswith("kube-changejob: invalid"), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("POLL_INTERVAL", "abc", "invalid duration 'abc'"),
        ("CHANGEJOB_POLL_INTERVAL", "soon", "invalid duration 'soon'"),
        ("CHANGEJOB_WORKERS", "many", "--workers (CHANGEJOB_WORKERS)"),
        ("CHANGEJOB_LOG_FORMAT", "yaml", "--log-format (CHANGEJOB_LOG_FORMAT)"),
    ],
)
def test_bad_environment_values_exit_2(
    variable: str, value: str, fragment: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)
    code, err = run_main(["run"], capsys)
    assert code == 2, err
    assert fragment in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--no-such-flag=1"],
        ["run", "--workers"],
        [],
        ["walk"],
    ],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(argv, capsys)
    assert code == 2
    assert "usage: kube-changejob" in err


def test_every_error_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(["run", "--workers=0", "--shards=0", "--log-level=loud"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3, err
    assert {line.split(":")[1].strip() for line in lines} == {
        "invalid --workers (CHANGEJOB_WORKERS)",
        "invalid --shards (CHANGEJOB_SHARDS)",
        "invalid --log-level (CHANGEJOB_LOG_LEVEL)",
    }


def test_process_exit_code_is_2() -> None:
    """The installed entry point really exits with 2 (checked in a child process, no cluster needed)."""
    env = {"PYTHONPATH": str(OPERATOR_SRC), "PATH": "/usr/bin:/bin"}
    bad_value = subprocess.run(
        [sys.executable, "-m", "changejob.cli", "run", "--poll-interval=soon"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad_value.returncode == 2, bad_value.stderr
    assert "kube-changejob: invalid --poll-interval (POLL_INTERVAL or CHANGEJOB_POLL_INTERVAL)" in bad_value.stderr
    assert "Traceback" not in bad_value.stderr
    bad_flag = subprocess.run(
        [sys.executable, "-m", "changejob.cli", "run", "--pol-interval=5s"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad_flag.returncode == 2, bad_flag.stderr
    assert "unrecognized arguments: --pol-interval=5s" in bad_flag.stderr
