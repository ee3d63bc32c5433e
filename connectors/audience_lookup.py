"""Find-or-create, the one way every connector resolves a target to a platform audience.

The order is the same on every platform: an id the user pinned or state remembers is checked and
kept (never silently replaced by a new audience, which would lose the members already there); without
one, an audience of the target's name is reused, so a lost state file does not create duplicates;
only then is a new one created. Each platform passes its own calls; ``check`` raises when a found
audience cannot take this sync (another identifier schema, another list type).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from audiencesync.connectors.contract import AudienceSpec

A = TypeVar("A")


def _accept(_audience: object) -> None:
    return None


def find_or_create(
    spec: AudienceSpec,
    *,
    lookup: Callable[[str], A],
    find: Callable[[str], A | None],
    id_of: Callable[[A], str],
    create: Callable[[], str],
    check: Callable[[A], None] = _accept,
) -> str:
    """The id of ``spec``'s platform audience.

    ``lookup(known_id)`` returns the audience with that id or raises ``AudienceGone``;
    ``find(name)`` returns the audience of that name or None; ``id_of`` reads a found audience's id;
    ``create()`` makes a new audience and returns its id; ``check`` raises on an unusable audience.
    """
    if spec.known_id:
        check(lookup(spec.known_id))
        return spec.known_id
    found = find(spec.name)
    if found is not None:
        check(found)
        return id_of(found)
    return create()
