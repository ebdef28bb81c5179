"""What is known right now of one watched resource: its state and the hashes of its selected fields.

The runtime keeps one :class:`Observed` per watched object and field set (20 000 at 10 000 CTJs),
so it is kept small: the digests are one string (see ``hashing.ObjectHasher.digests``) unpacked into
``hash`` and ``fields`` only when asked.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from changejob.domain import hashing

__all__ = ["FORBIDDEN", "MISSING", "PRESENT", "STATES", "UNKNOWN", "Observed"]

PRESENT: Final = "Present"
"""The object exists and its selected fields were hashed."""
MISSING: Final = "Missing"
"""The object does not exist."""
FORBIDDEN: Final = "Forbidden"
"""The operator may not read the object's collection (RBAC)."""
UNKNOWN: Final = "Unknown"
"""Not known yet, or the collection cannot be watched for another reason."""
STATES: Final = (PRESENT, MISSING, FORBIDDEN, UNKNOWN)


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """What is known of one watched resource right now.

    ``names`` are the selected fields (the hasher's own tuple, shared) and ``digests`` the combined
    hash then each field's digest, space-separated; empty unless ``state`` is Present.
    """

    state: str = UNKNOWN
    names: tuple[str, ...] = ()
    digests: str = ""
    message: str = ""
    # The changes not yet covered by a trigger: (monotonic time seen, watch span context), oldest
    # first. The oldest gives change-to-Job latency and parents the trigger's trace; the others
    # become span links (coalesced changes). Cleared once a plan accounts for them.
    origins: tuple[tuple[float, Any], ...] = ()

    @property
    def present(self) -> bool:
        return self.state == PRESENT

    @property
    def hash(self) -> str | None:
        """The combined hash of the selected fields; None unless Present."""
        return self.digests.partition(" ")[0] if self.digests else None

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """``((field, digest), ...)`` in spec order; empty unless Present."""
        if not self.digests:
            return ()
        return tuple(zip(self.names, hashing.split_digests(self.digests)[1], strict=True))

    @property
    def changed_at(self) -> float:
        return self.origins[0][0] if self.origins else 0.0

    def same_value(self, other: Observed) -> bool:
        """Whether ``other`` says the same about the resource (origins aside)."""
        return self.state == other.state and self.digests == other.digests
