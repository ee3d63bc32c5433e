"""The one find-or-create every connector uses (``audiencesync.connectors.audience_lookup``)."""

from __future__ import annotations

import pytest
from audiencesync.connectors.audience_lookup import find_or_create
from audiencesync.connectors.contract import AudienceSpec
from audiencesync.connectors.errors import AudienceGone, SchemaMismatch


class Platform:
    """Audiences by id, each a (name, kind) pair, and the calls made to it."""

    def __init__(self, audiences: dict[str, tuple[str, str]]) -> None:
        self.audiences = dict(audiences)
        self.calls: list[str] = []

    def lookup(self, audience_id: str) -> tuple[str, str, str]:
        self.calls.append(f"lookup {audience_id}")
        if audience_id not in self.audiences:
            raise AudienceGone(f"no audience {audience_id}")
        return (audience_id, *self.audiences[audience_id])

    def find(self, name: str) -> tuple[str, str, str] | None:
        self.calls.append(f"find {name}")
        return next(((i, n, k) for i, (n, k) in self.audiences.items() if n == name), None)

    def create(self, name: str) -> str:
        self.calls.append(f"create {name}")
        new_id = str(len(self.audiences) + 1)
        self.audiences[new_id] = (name, "contacts")
        return new_id

    def resolve(self, spec: AudienceSpec) -> str:
        def check(audience: tuple[str, str, str]) -> None:
            if audience[2] != "contacts":
                raise SchemaMismatch(f"audience {audience[0]} holds {audience[2]}")

        return find_or_create(
            spec,
            lookup=self.lookup,
            find=self.find,
            id_of=lambda audience: audience[0],
            create=lambda: self.create(spec.name),
            check=check,
        )


def spec(known_id: str | None = None) -> AudienceSpec:
    return AudienceSpec("vip@dest", "vip", "", ("email",), known_id=known_id)


def test_a_known_id_is_checked_and_kept_without_looking_by_name() -> None:
    platform = Platform({"7": ("renamed by hand", "contacts")})
    assert platform.resolve(spec("7")) == "7"
    assert platform.calls == ["lookup 7"]


def test_a_known_id_the_platform_lacks_is_gone_never_replaced() -> None:
    platform = Platform({})
    with pytest.raises(AudienceGone):
        platform.resolve(spec("7"))
    assert not platform.audiences


def test_without_an_id_the_audience_of_that_name_is_reused() -> None:
    platform = Platform({"3": ("vip", "contacts")})
    assert platform.resolve(spec()) == "3"
    assert platform.calls == ["find vip"]


def test_an_audience_is_created_only_when_none_has_the_name() -> None:
    platform = Platform({"3": ("other", "contacts")})
    created = platform.resolve(spec())
    assert platform.calls == ["find vip", "create vip"]
    assert platform.resolve(spec()) == created  # found by name the second time


@pytest.mark.parametrize("known_id", [None, "3"])
def test_an_unusable_audience_stops_the_lookup_and_creates_nothing(known_id: str | None) -> None:
    platform = Platform({"3": ("vip", "mobile ids")})
    with pytest.raises(SchemaMismatch):
        platform.resolve(spec(known_id))
    assert len(platform.audiences) == 1
