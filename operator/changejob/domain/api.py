"""The ChangeTriggeredJob spec as the operator sees it: parsing, defaults and validation.

The CRD's OpenAPI schema already rejects many mistakes at the API server; :func:`parse_spec` is the
runtime's and the admission webhook's view and checks everything that can be checked without the
API server (kinds and namespaces need discovery and are checked elsewhere). It reports every
problem at once, each prefixed with the path of the offending field, so a user fixes a manifest in
one round trip.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from changejob.domain import fields

__all__ = [
    "DEFAULT_CONDITION",
    "DEFAULT_COOLDOWN",
    "DEFAULT_FIELDS",
    "DEFAULT_HISTORY",
    "DURATION_PATTERN",
    "MAX_NAME_LENGTH",
    "Condition",
    "CtjKey",
    "ResourceRef",
    "Spec",
    "SpecError",
    "format_duration",
    "name_errors",
    "parse_duration",
    "parse_spec",
]

GROUP: Final = "triggers.changejob.dev"
VERSION: Final = "v1alpha"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ChangeTriggeredJob"
PLURAL: Final = "changetriggeredjobs"

CtjKey: TypeAlias = tuple[str, str]
"""A CTJ's (namespace, name): the key of the work queue, the stores and the subscriptions."""

# A CTJ's name is the value of the `changejob.dev/owner` label of its Jobs, so it must also be a
# valid label value: at most 63 characters.
MAX_NAME_LENGTH: Final = 63

DURATION_PATTERN: Final = r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"
"""Go ``time.ParseDuration`` syntax without a sign (a cooldown is never negative).

Written for both Python's ``re`` and the RE2 the API server uses for CRD ``pattern``.
"""

_DURATION_RE: Final = re.compile(DURATION_PATTERN)
_DURATION_PART_RE: Final = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|µs|μs|ms|s|m|h)")
_NANOSECONDS: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_NANOSECONDS: Final = 2**63 - 1  # Go's time.Duration is an int64 of nanoseconds
_DNS_LABEL_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN_RE: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# `group/version` or a core `version`; a version is a DNS-1035 label (CRDs may name theirs freely).
_API_VERSION_RE: Final = re.compile(
    r"(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-z]([-a-z0-9]*[a-z0-9])?"
)
_KIND_RE: Final = re.compile(r"[A-Za-z]([-A-Za-z0-9]*[A-Za-z0-9])?")


class SpecError(ValueError):
    """An invalid CTJ spec; ``errors`` lists every problem, each starting with its field path."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        count = len(self.errors)
        heading = "invalid spec" if count == 1 else f"invalid spec ({count} problems)"
        super().__init__(heading + ": " + "; ".join(self.errors))


class Condition(enum.StrEnum):
    """When a trigger fires: on a change of any resource, or once every resource has changed."""

    ANY = "Any"
    ALL = "All"


DEFAULT_CONDITION: Final = Condition.ANY
DEFAULT_COOLDOWN: Final = datetime.timedelta(seconds=60)
DEFAULT_HISTORY: Final = 5
DEFAULT_FIELDS: Final = (fields.WHOLE_OBJECT,)


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceRef:
    """One watched object and the fields of it that matter."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    fields: tuple[str, ...] = DEFAULT_FIELDS

    @property
    def group(self) -> str:
        """The API group; ``""`` for the core group (``apiVersion: v1``)."""
        group, _, _ = self.api_version.rpartition("/")
        return group

    @property
    def version(self) -> str:
        """The version part of ``apiVersion``."""
        return self.api_version.rpartition("/")[2]

    def describe(self) -> str:
        """``Kind/namespace/name``, or ``Kind/name`` for cluster-scoped objects."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Spec:
    """A parsed, defaulted and validated CTJ spec."""

    resources: tuple[ResourceRef, ...]
    condition: Condition
    cooldown: datetime.timedelta
    history: int
    job_template: Mapping[str, Any]


# --------------------------------------------------------------------------------------------------
# Durations


def parse_duration(text: str) -> datetime.timedelta:
    """Parse a Go duration (``30s``, ``15m``, ``1h30m``, ``1.5h``, ``500ms``, ``0``) into a timedelta.

    Signs are not accepted: a negative duration is an error, as is anything Go would reject and
    anything beyond Go's range (about 292 years). Precision below a microsecond is truncated.
    """
    if not isinstance(text, str):
        raise ValueError(f'invalid duration {text!r}: expected a string such as "30s"')
    if text.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(
            f'invalid duration {text!r}: expected a Go duration such as "30s", "15m" or "1h30m" '
            "(units ns, us, ms, s, m, h)"
        )
    total = 0
    for whole, fraction, unit in _DURATION_PART_RE.findall(text):
        scale = _NANOSECONDS[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > _MAX_NANOSECONDS:
            raise ValueError(f"invalid duration {text!r}: out of range (at most about 292 years)")
    return datetime.timedelta(microseconds=total // 1_000)


def format_duration(value: datetime.timedelta) -> str:
    """Format like Go's ``Duration.String``: ``1h30m0s``, ``1m0s``, ``1.5s``, ``500ms``, ``0s``."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros == 0:
        return "0s"
    if micros < 1_000:
        return f"{sign}{micros}µs"
    if micros < 1_000_000:
        return f"{sign}{_decimal(micros, 1_000)}ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _decimal(rest, 1_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` without trailing zeros, e.g. ``_decimal(1500, 1000) == "1.5"``."""
    whole, fraction = divmod(value, unit)
    if not fraction:
        return str(whole)
    digits = str(fraction).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


# --------------------------------------------------------------------------------------------------
# Names


def name_errors(name: str) -> tuple[str, ...]:
    """Why ``name`` cannot name a CTJ (empty when it can).

    Beyond Kubernetes' own rule (a DNS-1123 subdomain), the name becomes the value of the
    ``changejob.dev/owner`` label on every Job, so it must also fit a label value: 63 characters.
    """
    problems: list[str] = []
    if not name:
        return ("must not be empty",)
    if len(name) > MAX_NAME_LENGTH:
        problems.append(
            f"must be at most {MAX_NAME_LENGTH} characters (it is the value of the Jobs' owner label), got {len(name)}"
        )
    if not _DNS_SUBDOMAIN_RE.fullmatch(name):
        problems.append(
            "must consist of lower case alphanumeric characters, '-' or '.', and must start and end "
            "with an alphanumeric character"
        )
    return tuple(problems)


# --------------------------------------------------------------------------------------------------
# Spec


def parse_spec(spec: Mapping[str, Any]) -> Spec:
    """Apply defaults to a CTJ ``spec`` and validate it; raise :class:`SpecError` listing all problems.

    Defaults: ``condition: Any``, ``cooldown: 60s``, ``history: 5``, ``fields: ["*"]``.
    """
    if not isinstance(spec, Mapping):
        raise SpecError([f"spec: must be an object, got {_type_name(spec)}"])
    errors: list[str] = []
    resources = _parse_resources(spec.get("resources"), errors)
    condition = _parse_condition(spec.get("condition"), errors)
    cooldown = _parse_cooldown(spec.get("cooldown"), errors)
    history = _parse_history(spec.get("history"), errors)
    job_template = _parse_job_template(spec.get("jobTemplate"), errors)
    if errors:
        raise SpecError(errors)
    return Spec(
        resources=resources,
        condition=condition,
        cooldown=cooldown,
        history=history,
        job_template=job_template,
    )


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _parse_resources(value: object, errors: list[str]) -> tuple[ResourceRef, ...]:
    where = "spec.resources"
    if value is None:
        errors.append(f"{where}: required; list at least one resource to watch")
        return ()
    if not isinstance(value, list | tuple):
        errors.append(f"{where}: must be an array, got {_type_name(value)}")
        return ()
    if not value:
        errors.append(f"{where}: must list at least one resource to watch")
        return ()
    parsed = (_parse_resource(item, f"{where}[{index}]", errors) for index, item in enumerate(value))
    return tuple(ref for ref in parsed if ref is not None)


def _required_string(item: Mapping[str, Any], key: str, where: str, errors: list[str]) -> str:
    value = item.get(key)
    if value is None:
        errors.append(f"{where}.{key}: required")
        return ""
    if not isinstance(value, str):
        errors.append(f"{where}.{key}: must be a string, got {_type_name(value)}")
        return ""
    if not value.strip():
        errors.append(f"{where}.{key}: must not be empty")
        return ""
    return value


def _parse_resource(item: object, where: str, errors: list[str]) -> ResourceRef | None:
    if not isinstance(item, Mapping):
        errors.append(f"{where}: must be an object, got {_type_name(item)}")
        return None
    before = len(errors)
    api_version = _required_string(item, "apiVersion", where, errors)
    if api_version and not _API_VERSION_RE.fullmatch(api_version):
        errors.append(
            f'{where}.apiVersion: invalid apiVersion "{api_version}": expected "v1" or "group/version" '
            'such as "apps/v1"'
        )
    kind = _required_string(item, "kind", where, errors)
    if kind and not _KIND_RE.fullmatch(kind):
        errors.append(f'{where}.kind: invalid kind "{kind}": expected a CamelCase name such as "ConfigMap"')
    name = _required_string(item, "name", where, errors)
    if name and (name in (".", "..") or "/" in name or "%" in name):
        # The API server's own rule for names in a URL path; kinds differ beyond it (RBAC names
        # may hold ':'), so nothing stricter is checked here.
        errors.append(f'{where}.name: invalid name "{name}": must not be "." or ".." or contain "/" or "%"')
    namespace = _parse_namespace(item.get("namespace"), where, errors)
    field_paths = _parse_fields(item.get("fields"), f"{where}.fields", errors)
    if len(errors) > before:
        return None
    return ResourceRef(api_version=api_version, kind=kind, name=name, namespace=namespace, fields=field_paths)


def _parse_namespace(value: object, where: str, errors: list[str]) -> str | None:
    if value is None or value == "":
        return None  # cluster-scoped, or namespaced and then rejected by discovery-aware checks
    if not isinstance(value, str):
        errors.append(f"{where}.namespace: must be a string, got {_type_name(value)}")
        return None
    if not _DNS_LABEL_RE.fullmatch(value) or len(value) > MAX_NAME_LENGTH:
        errors.append(f'{where}.namespace: invalid namespace "{value}": expected a DNS-1123 label')
        return None
    return value


def _parse_fields(value: object, where: str, errors: list[str]) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_FIELDS
    if not isinstance(value, list | tuple):
        errors.append(f"{where}: must be an array of field paths, got {_type_name(value)}")
        return ()
    if not value:
        errors.append(f'{where}: must list at least one field path (omit it, or use ["*"], for all)')
        return ()
    seen: set[str] = set()
    result: list[str] = []
    for index, expr in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(expr, str):
            errors.append(f"{at}: must be a string, got {_type_name(expr)}")
            continue
        try:
            fields.compile_path(expr)
        except fields.InvalidFieldPath as error:
            errors.append(f"{at}: {error}")
            continue
        if expr in seen:
            errors.append(f'{at}: duplicate field path "{expr}"')
            continue
        seen.add(expr)
        result.append(expr)
    return tuple(result)


def _parse_condition(value: object, errors: list[str]) -> Condition:
    if value is None:
        return DEFAULT_CONDITION
    try:
        return Condition(value if isinstance(value, str) else "")
    except ValueError:
        allowed = ", ".join(f'"{c.value}"' for c in Condition)
        shown = f'"{value}"' if isinstance(value, str) else _type_name(value)
        errors.append(f"spec.condition: must be one of {allowed}, got {shown}")
        return DEFAULT_CONDITION


def _parse_cooldown(value: object, errors: list[str]) -> datetime.timedelta:
    if value is None:
        return DEFAULT_COOLDOWN
    if not isinstance(value, str):
        errors.append(f'spec.cooldown: must be a duration string such as "30s", got {_type_name(value)}')
        return DEFAULT_COOLDOWN
    try:
        return parse_duration(value)
    except ValueError as error:
        errors.append(f"spec.cooldown: {error}")
        return DEFAULT_COOLDOWN


def _parse_history(value: object, errors: list[str]) -> int:
    if value is None:
        return DEFAULT_HISTORY
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(f"spec.history: must be an integer, got {_type_name(value)}")
        return DEFAULT_HISTORY
    if value < 1:
        errors.append(f"spec.history: must be at least 1, got {value}")
        return DEFAULT_HISTORY
    return value


def _parse_job_template(value: object, errors: list[str]) -> Mapping[str, Any]:
    where = "spec.jobTemplate"
    if value is None:
        errors.append(f"{where}: required")
        return {}
    if not isinstance(value, Mapping):
        errors.append(f"{where}: must be an object, got {_type_name(value)}")
        return {}
    _check_string_map(value.get("metadata"), f"{where}.metadata", errors)
    job_spec = value.get("spec")
    if job_spec is None:
        errors.append(f"{where}.spec: required")
    elif not isinstance(job_spec, Mapping):
        errors.append(f"{where}.spec: must be an object, got {_type_name(job_spec)}")
    else:
        template = job_spec.get("template")
        if template is None:
            errors.append(f"{where}.spec.template: required (the Pod template the Job runs)")
        elif not isinstance(template, Mapping):
            errors.append(f"{where}.spec.template: must be an object, got {_type_name(template)}")
    return value


def _check_string_map(metadata: object, where: str, errors: list[str]) -> None:
    """Labels and annotations of the template must be string-to-string maps."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        errors.append(f"{where}: must be an object, got {_type_name(metadata)}")
        return
    for key in ("labels", "annotations"):
        entries = metadata.get(key)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            errors.append(f"{where}.{key}: must be an object, got {_type_name(entries)}")
            continue
        for name, text in entries.items():
            if not isinstance(text, str):
                errors.append(f"{where}.{key}[{name}]: must be a string, got {_type_name(text)}")
