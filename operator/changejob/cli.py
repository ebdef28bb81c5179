"""Entry point: ``kube-changejob run [flags]``. Flags override environment variables."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import textwrap
import typing
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType

import pydantic
from pydantic.fields import FieldInfo

from changejob import __version__, preflight, settings
from changejob.runtime import manager
from changejob.telemetry import logs, tracing
from changejob.webhook import serve

log = logging.getLogger("changejob")

EXIT_CODES = """exit codes:
  0  stopped by SIGTERM or SIGINT
  1  unexpected error
  2  invalid flag or environment variable
  3  no usable kubeconfig (and not running in a Pod)
  4  the API server cannot be reached or rejects the credentials
  5  the operator's namespace (--leader-election-namespace) does not exist
  6  the ChangeTriggeredJob CRD is not installed
  7  the credentials lack a permission the operator needs (RBAC)"""


def format_duration(value: timedelta) -> str:
    """A duration as the operator reads them (Go syntax): 90 s -> 1m30s, 0.5 s -> 500ms."""
    ms = round(value.total_seconds() * 1000)
    if ms % 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return "".join(parts) or "0s"


def _choices(field: FieldInfo) -> tuple[str, ...]:
    if typing.get_origin(field.annotation) is typing.Literal:
        return tuple(str(c) for c in typing.get_args(field.annotation))
    return ()


def _default_text(name: str, field: FieldInfo) -> str:
    if name in settings.DEFAULTS_SHOWN:
        return settings.DEFAULTS_SHOWN[name]
    value = field.get_default(call_default_factory=False)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, timedelta):
        return format_duration(value)
    return f'"{value}"' if value in ("", "0") or " " in str(value) else str(value)


def _metavar(name: str, field: FieldInfo) -> str:
    if choices := _choices(field):
        return "{" + ",".join(choices) + "}"
    annotation = field.annotation
    if annotation is timedelta:
        return "DURATION"
    if annotation is int:
        return "INT"
    if typing.get_origin(annotation) is list:
        return "LIST"
    if name.endswith("_address"):
        return "ADDRESS"
    if name in ("kubeconfig", "webhook_cert_dir"):
        return "PATH"
    return "NAME" if name != "webhook_host" else "ADDRESS"


def _help(name: str, field: FieldInfo) -> str:
    text = field.description or ""
    if choices := _choices(field):
        text += f"; one of {', '.join(choices)}"
    return f"{text} (default: {_default_text(name, field)})".replace("%", "%%")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's table as written and never breaks a value such as cert-manager at its hyphen."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-changejob", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kube-changejob {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the operator",
        description=textwrap.fill(
            "Run the operator. Every flag can also be set as CHANGEJOB_<FLAG> (POLL_INTERVAL for "
            "--poll-interval). Durations use Go syntax (30s, 1m30s, 500ms); boolean flags may be given "
            "bare (--leader-elect) or as --flag=true/false.",
            width=78,
            break_on_hyphens=False,
        ),
        epilog=EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    for name, field in settings.Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            # Bare means true, like Go's flag package (and every kubebuilder operator).
            run.add_argument(
                flag, dest=name, nargs="?", const="true", default=None, metavar="BOOL", help=_help(name, field)
            )
        else:
            run.add_argument(flag, dest=name, default=None, metavar=_metavar(name, field), help=_help(name, field))
    return parser


def parse(argv: Sequence[str]) -> settings.Settings:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    return settings.Settings(**overrides)


def _where(loc: tuple[int | str, ...]) -> str:
    """Name a setting the way users set it: its flag and its environment variable(s)."""
    if not loc:
        return "settings"
    name = str(loc[0])
    env = f"CHANGEJOB_{name.upper()}"
    if name == "poll_interval":
        env = f"POLL_INTERVAL or {env}"
    return f"--{name.replace('_', '-')} ({env})"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse(sys.argv[1:] if argv is None else argv)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            print(f"kube-changejob: invalid {_where(err['loc'])}: {err['msg']}", file=sys.stderr)
        return preflight.ExitCode.USAGE
    logs.setup(level=config.log_level, fmt=config.log_format)
    try:
        api_client = preflight.load_client(kubeconfig=config.kubeconfig, context=config.context)
        preflight.check(
            api_client,
            namespaces=config.namespaces,
            operator_namespace=config.leader_election_namespace,
            leader_elect=config.leader_elect,
        )
    except preflight.Problem as problem:
        print("kube-changejob: " + " ".join(problem.message.split()), file=sys.stderr)  # one line, always
        return problem.code
    tracing.setup(service_name="kube-changejob")
    mgr = manager.Manager(
        config,
        api_client=api_client,
        webhook=lambda m: serve.start(settings=config, api_client=m.api_client, discovery_=m.discovery),
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("received signal %d", signum)
        mgr.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mgr.run()
    return preflight.ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
