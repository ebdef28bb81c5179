"""Hashes of selected fields: canonical bytes, then a fast (or, for Secrets, keyed) digest.

The canonical form of a value is its JSON with sorted keys (orjson), so two objects with the same
content hash the same whatever order their keys arrived in. Digests are xxh3-128: not
cryptographic, but collision-resistant enough to detect change and several times faster than
SHA-256. The fields of a Secret are hashed with keyed BLAKE2b-128 instead, because the digests are
published in the CTJ's status and an unkeyed digest of a short secret could be guessed by trying
candidates.

Hashing runs for every watch event of every watched object, so :class:`ObjectHasher` compiles its
field paths once and keeps its per-call work to one extraction, one serialisation and one digest
per field.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson
import xxhash

from changejob.domain import fields

__all__ = ["ABSENT_DIGEST", "ObjectHasher", "canonical", "combine", "digest", "hasher_for", "split_digests"]

ABSENT_DIGEST: Final = "absent"
"""The digest of :data:`fields.ABSENT` (a path that matched nothing), whatever the key."""

ABSENT_BYTES: Final = b"\x00absent"
"""Canonical bytes of :data:`fields.ABSENT`; no JSON document starts with a NUL byte."""

_dumps: Final = orjson.dumps
_SORT_KEYS: Final = orjson.OPT_SORT_KEYS
_xxh3_128: Final[Callable[[bytes], str]] = xxhash.xxh3_128_hexdigest
_blake2b: Final = hashlib.blake2b
_ABSENT: Final = fields.ABSENT
_compile_path: Final = fields.compile_path  # the parameter `fields` shadows the module below
_MAX_KEY_BYTES: Final = 64


def canonical(value: Any) -> bytes:
    """JSON of ``value`` with sorted keys; ``ABSENT`` is ``b"\\x00absent"`` (never valid JSON)."""
    if value is _ABSENT:
        return ABSENT_BYTES
    return _dumps(value, option=_SORT_KEYS)


def digest(value: Any, *, key: bytes | None = None) -> str:
    """Hex digest of ``canonical(value)``: xxh3-128, or BLAKE2b-128 keyed with ``key`` when given.

    ``ABSENT`` always digests to ``"absent"`` so status shows plainly that a path matched nothing.
    """
    if value is _ABSENT:
        return ABSENT_DIGEST
    data = _dumps(value, option=_SORT_KEYS)
    if key is None:
        return _xxh3_128(data)
    return _blake2b(data, digest_size=16, key=key).hexdigest()


def combine(hashes: Sequence[str]) -> str:
    """One hash for a resource: xxh3-128 of its field hashes joined with newlines, in spec order."""
    return _xxh3_128("\n".join(hashes).encode())


def split_digests(packed: str) -> tuple[str, list[str]]:
    """The combined hash and the field digests (in field order) of an ``ObjectHasher.digests`` string."""
    combined, *per_field = packed.split(" ")
    return combined, per_field


_Result = tuple[tuple[tuple[str, str], ...], str]
_Extract = Callable[[Mapping[str, Any]], Any]


class ObjectHasher:
    """Hashes the configured fields of an object; built once per (fields, key) and shared.

    ``hash(obj)`` returns ``((field, digest), ...)`` in the order the fields were given, and the
    combined hash of those digests (see :func:`combine`). ``digests(obj)`` returns the same as one
    string, the combined hash then each field's digest, space-separated (see :func:`split_digests`):
    one object instead of a tuple per field, for state kept per watched object. Like
    ``FieldPath.extract``, both are functions chosen when the hasher is built (one field or several,
    keyed or not), so a call does no dispatching of its own.
    """

    __slots__ = ("digests", "fields", "hash", "keyed")

    fields: tuple[str, ...]
    keyed: bool
    hash: Callable[[Mapping[str, Any]], _Result]
    digests: Callable[[Mapping[str, Any]], str]

    def __init__(self, *, fields: Sequence[str], key: bytes | None = None) -> None:
        if isinstance(fields, str):
            raise TypeError("fields must be a sequence of field paths, not a single string")
        if not fields:
            raise ValueError("an ObjectHasher needs at least one field")
        if key is not None and not 0 < len(key) <= _MAX_KEY_BYTES:
            raise ValueError(f"a hash key must be 1 to {_MAX_KEY_BYTES} bytes long, got {len(key)}")
        self.fields = tuple(fields)
        self.keyed = key is not None
        paths = tuple((name, _compile_path(name).extract) for name in self.fields)
        to_digest = _digest_function(key)
        self.hash = _single_field(*paths[0], to_digest) if len(paths) == 1 else _many_fields(paths, to_digest)
        self.digests = (
            _single_field_packed(paths[0][1], to_digest) if len(paths) == 1 else _many_fields_packed(paths, to_digest)
        )

    def __repr__(self) -> str:
        return f"ObjectHasher(fields={self.fields!r}, keyed={self.keyed})"


def _single_field(name: str, extract: _Extract, to_digest: Callable[[Any], str]) -> Callable[..., _Result]:
    def hash_one(obj: Mapping[str, Any]) -> _Result:
        value = to_digest(extract(obj))
        return ((name, value),), _xxh3_128(value.encode())

    return hash_one


def _many_fields(paths: tuple[tuple[str, _Extract], ...], to_digest: Callable[[Any], str]) -> Callable[..., _Result]:
    def hash_many(obj: Mapping[str, Any]) -> _Result:
        pairs = tuple([(name, to_digest(extract(obj))) for name, extract in paths])
        return pairs, _xxh3_128("\n".join([value for _, value in pairs]).encode())

    return hash_many


def _single_field_packed(extract: _Extract, to_digest: Callable[[Any], str]) -> Callable[..., str]:
    def digests_one(obj: Mapping[str, Any]) -> str:
        value = to_digest(extract(obj))
        return f"{_xxh3_128(value.encode())} {value}"

    return digests_one


def _many_fields_packed(paths: tuple[tuple[str, _Extract], ...], to_digest: Callable[[Any], str]) -> Callable[..., str]:
    def digests_many(obj: Mapping[str, Any]) -> str:
        values = [to_digest(extract(obj)) for _, extract in paths]
        return " ".join([_xxh3_128("\n".join(values).encode()), *values])

    return digests_many


def _digest_function(key: bytes | None) -> Callable[[Any], str]:
    """A one-argument digest with the key bound, so the hot path makes no keyword calls."""
    if key is None:

        def plain(value: Any) -> str:
            if value is _ABSENT:
                return ABSENT_DIGEST
            return _xxh3_128(_dumps(value, option=_SORT_KEYS))

        return plain

    # Keying BLAKE2b costs a block compression; do it once and copy the keyed state per value.
    prepared = _blake2b(digest_size=16, key=key)

    def keyed(value: Any) -> str:
        if value is _ABSENT:
            return ABSENT_DIGEST
        state = prepared.copy()
        state.update(_dumps(value, option=_SORT_KEYS))
        return state.hexdigest()

    return keyed


@functools.lru_cache(maxsize=1024)
def hasher_for(*, fields: tuple[str, ...], key: bytes | None = None) -> ObjectHasher:
    """The shared :class:`ObjectHasher` for these fields and key (many CTJs watch alike)."""
    return ObjectHasher(fields=fields, key=key)
