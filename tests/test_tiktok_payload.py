"""TikTok's pure payload pieces that the connector tests do not reach on their own."""

from __future__ import annotations

import hashlib
from typing import Any

from audiencesync.connectors.tiktok import payload as tp


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_column_check_takes_only_64_lowercase_hex_digits_per_value() -> None:
    good = [h(str(i)) for i in range(5)]
    assert tp._all_hex64(good) and tp._all_hex64([]) and tp._all_hex64(good[:1])
    for bad in (
        ["A" * 64],
        [good[0][:32], good[1] + good[0][:32]],  # right total length, wrong split
        [good[0][:63] + ","],
        [good[0] + "," + good[1][:63]],
        [good[0][:63]],
        ["é" * 64],
        [None],
        [1],
    ):
        values: list[Any] = [*good, *bad]
        assert not tp._all_hex64(values), bad
