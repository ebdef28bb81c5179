"""Entry point: ``kube-changejob run [flags]``. Flags override environment variables."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import pydantic

from changejob import __version__, settings
from changejob.runtime import manager
from changejob.telemetry import logs, tracing
from changejob.webhook import serve

log = logging.getLogger("changejob")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kube-changejob", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kube-changejob {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the operator",
        description="Run the operator. Every flag can also be set as CHANGEJOB_<FLAG> "
        "(POLL_INTERVAL for --poll-interval).",
    )
    for name, field in settings.Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        run.add_argument(flag, dest=name, default=None, metavar="VALUE", help=help_text)
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
        return 2
    logs.setup(level=config.log_level, fmt=config.log_format)
    tracing.setup(service_name="kube-changejob")
    mgr = manager.Manager(
        config, webhook=lambda m: serve.start(settings=config, api_client=m.api_client, discovery_=m.discovery)
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("received signal %d", signum)
        mgr.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mgr.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
