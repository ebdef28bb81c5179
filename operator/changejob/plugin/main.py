"""``kubectl changejob``: trigger, suspend, resume and explain a ChangeTriggeredJob.

Installed as the console script ``kubectl-changejob``, so kubectl runs it for ``kubectl changejob``
once it is on PATH. Flags follow kubectl (``-n/--namespace``, ``--context``, ``--kubeconfig``,
``-h/--help``) and may come before or after the command; usage speaks of ``kubectl changejob``.
A failure prints one line starting with ``error:`` and exits with the code listed in ``--help``.
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from changejob import __version__
from changejob.domain import api
from changejob.plugin import client, why
from changejob.plugin.client import ExitCode, Failure

PROG = "kubectl changejob"
OBJECT = f"{api.KIND.lower()}.{api.GROUP}"
"""How kubectl prints an object's kind and group: ``changetriggeredjob.triggers.changejob.dev/NAME``."""

EXIT_CODES = """\
exit codes:
  0  done
  1  error talking to the cluster (unreachable, credentials, kubeconfig, CRD missing, refused)
  2  invalid command line
  3  the ChangeTriggeredJob does not exist in the namespace
  4  forbidden: the credentials may not do this (RBAC or admission)
  5  --wait timed out"""

EXAMPLES = """\
examples:
  # Run the Job of CTJ image-watcher now, wait for it and follow its logs
  kubectl logs -f $(kubectl changejob trigger image-watcher --wait -o name)

  # Stop creating Jobs for a while (changes are still recorded), then resume
  kubectl changejob suspend image-watcher -n web
  kubectl changejob resume image-watcher -n web

  # Why did (or didn't) it trigger?
  kubectl changejob why image-watcher -n web"""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (``error: ...``) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _kubectl_flags(parser: argparse.ArgumentParser) -> None:
    """The kubectl flags; SUPPRESS defaults let them be given before or after the command."""
    parser.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the namespace of the ChangeTriggeredJob (default: the kubeconfig context's, else default)",
    )
    parser.add_argument("--context", default=argparse.SUPPRESS, metavar="NAME", help="the kubeconfig context to use")
    parser.add_argument(
        "--kubeconfig",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)",
    )


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Trigger, suspend, resume and explain ChangeTriggeredJobs (kube-changejob).",
        epilog=f"{EXAMPLES}\n\n{EXIT_CODES}",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"kubectl-changejob {__version__}")
    _kubectl_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=text,
            description=textwrap.fill(" ".join(description.split()), 78, break_on_hyphens=False),
            epilog=EXIT_CODES,
            formatter_class=formatter,
        )
        sub.add_argument("name", metavar="NAME", help="the ChangeTriggeredJob")
        _kubectl_flags(sub)
        return sub

    trigger = command(
        "trigger",
        "create one Job now, whatever changed and regardless of the cooldown",
        textwrap.dedent(f"""\
            Ask the operator for one Job now: sets the annotation {why.TRIGGER_REQUEST_ANNOTATION} to a new
            value (a metadata-only write: no admission webhook is involved). The operator creates the Job
            regardless of changes and of the cooldown and records the value in status.lastTriggerRequest;
            a suspended ChangeTriggeredJob creates it on resume."""),
    )
    trigger.add_argument(
        "--wait", action="store_true", help="wait until the operator has handled the request and print the Job"
    )
    trigger.add_argument(
        "--timeout", default="60s", metavar="DURATION", help="how long --wait waits (Go duration; default 60s)"
    )
    trigger.add_argument(
        "-o",
        "--output",
        choices=("name",),
        help="name: print only job.batch/NAME (with --wait) or the ChangeTriggeredJob's resource/name",
    )
    command(
        "suspend",
        "stop creating Jobs (spec.suspend: true); changes are still recorded",
        "Set spec.suspend to true: no Job is created until resume; changes are still observed and shown.",
    )
    command(
        "resume",
        "create Jobs again (spec.suspend: false)",
        "Set spec.suspend to false. Changes made while suspended trigger one Job (unless they were undone).",
    )
    command(
        "why",
        "explain the state: resources, changes, what it waits for, last Jobs",
        "Explain a ChangeTriggeredJob: each watched resource's state and the fields changed since the last "
        "trigger, what it is waiting for (cooldown, condition All, an active Job, suspension, a problem) and "
        "its newest Jobs.",
    )
    return parser


# --------------------------------------------------------------------------------------------------
# Commands


def request_value(now: datetime.datetime) -> str:
    """A trigger-request value never used before: the time (microseconds) and 48 random bits."""
    return f"{now.astimezone(datetime.UTC):%Y-%m-%dT%H:%M:%S.%fZ}-{secrets.token_hex(6)}"


def _trigger(session: client.Session, args: argparse.Namespace) -> None:
    value = request_value(datetime.datetime.now(datetime.UTC))
    patched = client.patch(session, args.name, {"metadata": {"annotations": {why.TRIGGER_REQUEST_ANNOTATION: value}}})
    if (patched.get("spec") or {}).get("suspend") is True:
        print(f"warning: {args.name} is suspended: the Job is created on resume", file=sys.stderr)
    if not args.wait:
        if args.output == "name":
            print(f"{OBJECT}/{args.name}")
        else:
            print(f"{OBJECT}/{args.name} trigger requested ({why.TRIGGER_REQUEST_ANNOTATION}={value})")
        return
    if args.output != "name":
        print(f"{OBJECT}/{args.name} trigger requested ({why.TRIGGER_REQUEST_ANNOTATION}={value})", flush=True)
    handled = client.wait_for_request(session, patched, value, timeout=args.timeout)
    job = client.job_of_request(session, handled, value)
    if job is None:
        raise Failure(ExitCode.ERROR, f"{args.name} handled trigger request {value} but names no Job")
    print(f"job.batch/{job}" if args.output == "name" else f"job.batch/{job} created")


def _set_suspend(session: client.Session, args: argparse.Namespace, *, suspend: bool) -> None:
    done, already = ("suspended", "already suspended") if suspend else ("resumed", "not suspended")
    current = client.get(session, args.name)
    if ((current.get("spec") or {}).get("suspend") is True) == suspend:
        print(f"{OBJECT}/{args.name} {already}")
        return
    try:
        patched = client.patch(session, args.name, {"spec": {"suspend": suspend}})
    except Failure as failure:
        if "unknown field" in failure.message and "suspend" in failure.message:
            raise Failure(
                ExitCode.ERROR,
                f"this cluster's {client.RESOURCE} CRD has no spec.suspend: upgrade the CRD "
                "(crds/ or the Helm chart) to a kube-changejob version with suspend",
            ) from None
        raise
    if (patched.get("spec") or {}).get("suspend", False) is not suspend:
        raise Failure(ExitCode.ERROR, f"spec.suspend of {args.name} did not change: is the CRD up to date?")
    print(f"{OBJECT}/{args.name} {done}")


def _why(session: client.Session, args: argparse.Namespace) -> None:
    ctj = client.get(session, args.name)
    found: list[dict[str, Any]] | None
    error = None
    try:
        found = client.owned_jobs(session, args.name)
    except Failure as failure:
        found, error = None, failure.message
    sys.stdout.write(why.explain(ctj, found, now=datetime.datetime.now(datetime.UTC), jobs_error=error))


# --------------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        if args.command is None:
            parser.print_help()
            return ExitCode.OK
        if args.command == "trigger":
            try:
                args.timeout = api.parse_duration(args.timeout).total_seconds()
            except ValueError as exc:
                raise _UsageError(f"--timeout: {exc}") from None
        session = client.connect(
            kubeconfig=getattr(args, "kubeconfig", None),
            context=getattr(args, "context", None),
            namespace=getattr(args, "namespace", None),
        )
        if args.command == "trigger":
            _trigger(session, args)
        elif args.command == "why":
            _why(session, args)
        else:
            _set_suspend(session, args, suspend=args.command == "suspend")
    except _UsageError as exc:
        print(f"error: {exc} (see '{PROG} --help')", file=sys.stderr)
        return ExitCode.USAGE
    except Failure as failure:
        print(f"error: {' '.join(failure.message.split())}", file=sys.stderr)
        return failure.code
    except KeyboardInterrupt:
        return 130
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
