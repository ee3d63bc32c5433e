"""The outbox's batch reads and confirmations, on a real state file: a batch confirmed whole is
settled by key range, and only its own rows are touched; anything else takes the per-key path with
the same outcome."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from audiencesync.connectors.contract import HandleStatus, PushResult
from audiencesync.state.outbox import OutboxStore
from audiencesync.state.store import StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    opened = StateStore.open(tmp_path / "state.db")
    try:
        yield opened
    finally:
        opened.close()


def key(i: int) -> bytes:
    return i.to_bytes(4, "big")


def queue(store: StateStore, target: int, i: int, op: str = "add", status: str = "queued") -> None:
    payload = json.dumps({"email": f"{i:064x}"})
    store.db.conn.execute(
        "INSERT INTO outbox (target_id, member_key, op, payload, payload_fp, status, handle, observed_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [target, key(i), op, payload, key(i), status, "h1" if status == "in_flight" else None, time.time()],
    )


def queued(store: StateStore, *members: int, platform: str = "meta") -> tuple[int, OutboxStore]:
    """A target ``a@d`` with ``members`` queued as adds, in this order, and its outbox."""
    target = store.ensure_target("a@d", "a", "d", platform).id
    for i in members:
        queue(store, target, i)
    return target, OutboxStore(store.db)


def reject_record(store: StateStore, target: int, i: int) -> None:
    now = time.time()
    store.db.conn.execute(
        "INSERT INTO rejections (target_id, member_key, op, payload_fp, reason, first_at, last_at, attempts, "
        "next_retry_at) VALUES (?, ?, 'add', ?, 'bad', ?, ?, 1, ?)",
        [target, key(i), key(i), now, now, now + 3600],
    )


def members(store: StateStore, target: int) -> set[bytes]:
    rows = store.db.conn.execute("SELECT member_key FROM members WHERE target_id = ?", [target])
    return {r[0] for r in rows}


def outbox_rows(store: StateStore, target: int) -> dict[bytes, str]:
    rows = store.db.conn.execute("SELECT member_key, status FROM outbox WHERE target_id = ?", [target])
    return {r[0]: r[1] for r in rows}


def lag_count(store: StateStore, target: int) -> int:
    return int(store.db.conn.execute("SELECT count(*) FROM lag WHERE target_id = ?", [target]).fetchone()[0])


def test_batches_decode_payloads_and_page_by_key(store: StateStore) -> None:
    target, outbox = queued(store, 5, 1, 3, 2, 4)
    batches = list(outbox.batches(target, "add", 2))
    assert [[c.member_key for c in b.changes] for b in batches] == [
        [key(1), key(2)],
        [key(3), key(4)],
        [key(5)],
    ]
    assert batches[0].changes[0].identifiers == {"email": f"{1:064x}"}


def test_a_batch_confirmed_whole_touches_only_its_own_rows(store: StateStore) -> None:
    target = store.ensure_target("a@d", "a", "d", "meta").id
    other = store.ensure_target("b@d", "b", "d", "meta").id
    for i in (1, 2, 4, 5, 7):
        queue(store, target, i)
    queue(store, target, 3, status="in_flight")  # inside the batch's key range, not served
    queue(store, target, 4, op="remove")  # same key, other op
    queue(store, other, 2)  # same key, other target
    reject_record(store, target, 6)  # a held-back member inside the range keeps its backoff
    reject_record(store, target, 2)  # a confirmed member's old rejection goes
    outbox = OutboxStore(store.db)
    served = outbox.batches(target, "add", 4)
    batch = next(served)
    next(served)  # the runner reads one batch ahead before it applies the first
    assert [c.member_key for c in batch.changes] == [key(1), key(2), key(4), key(5)]
    outbox.apply_result(target, "add", PushResult.all_confirmed(batch.changes), 1, time.time())
    assert members(store, target) == {key(1), key(2), key(4), key(5)}
    assert outbox_rows(store, target) == {key(3): "in_flight", key(4): "queued", key(7): "queued"}
    assert members(store, other) == set() and outbox_rows(store, other) == {key(2): "queued"}
    assert lag_count(store, target) == 4
    rejected = {
        r[0] for r in store.db.conn.execute("SELECT member_key FROM rejections WHERE target_id = ?", [target])
    }
    assert rejected == {key(6)}


def test_a_partly_confirmed_batch_settles_each_member_by_its_outcome(store: StateStore) -> None:
    target, outbox = queued(store, *range(1, 6))
    [served] = list(outbox.batches(target, "add", 10))
    assert len(served.changes) == 5
    result = PushResult(confirmed=[key(1), key(3)], rejected={key(2): "invalid"}, retry=[key(4), key(5)])
    outbox.apply_result(target, "add", result, 1, time.time())
    assert members(store, target) == {key(1), key(3)}
    assert outbox_rows(store, target) == {key(4): "queued", key(5): "queued"}
    assert lag_count(store, target) == 2


def test_a_row_queued_after_the_batch_was_served_is_not_confirmed_with_it(store: StateStore) -> None:
    target, outbox = queued(store, 1, 3)
    [batch] = list(outbox.batches(target, "add", 10))
    queue(store, target, 2)  # lands inside the served key range before the answer is applied
    outbox.apply_result(target, "add", PushResult.all_confirmed(batch.changes), 1, time.time())
    assert members(store, target) == {key(1), key(3)}
    assert outbox_rows(store, target) == {key(2): "queued"}


def test_confirming_a_remove_deletes_only_the_identifiers_it_carried(store: StateStore) -> None:
    target, outbox = queued(store, 1, 2)
    [adds] = list(outbox.batches(target, "add", 10))
    outbox.apply_result(target, "add", PushResult.all_confirmed(adds.changes), 1, time.time())
    queue(store, target, 1, op="remove")
    queue(store, target, 2, op="remove")
    # Member 2 was re-added with new identifiers since: its old remove must not drop it.
    store.db.conn.execute("UPDATE members SET payload_fp = x'ff' WHERE member_key = ?", [key(2)])
    [removes] = list(outbox.batches(target, "remove", 10))
    outbox.apply_result(target, "remove", PushResult.all_confirmed(removes.changes), 2, time.time())
    assert members(store, target) == {key(2)}
    assert outbox_rows(store, target) == {}


def test_pending_members_are_settled_by_their_handle(store: StateStore) -> None:
    target, outbox = queued(store, *range(1, 7), platform="google")
    first, second = list(outbox.batches(target, "add", 3))
    assert [c.member_key for c in second.changes] == [key(4), key(5), key(6)]
    outbox.apply_result(
        target, "add", PushResult(pending={"job-1": [c.member_key for c in first.changes]}), 1, 5.0
    )
    partial = PushResult(pending={"job-2": [key(4), key(5)]}, retry=[key(6)])
    outbox.apply_result(target, "add", partial, 1, 6.0)
    assert outbox.in_flight_handles(target) == ["job-1", "job-2"]
    assert outbox_rows(store, target) == {
        **dict.fromkeys(map(key, range(1, 6)), "in_flight"),
        key(6): "queued",
    }
    assert outbox.apply_handle(target, "job-1", HandleStatus("pending"), 2) == 0
    assert outbox.apply_handle(target, "job-1", HandleStatus("confirmed"), 2) == 3
    assert members(store, target) == {key(1), key(2), key(3)} and lag_count(store, target) == 3
    sent = {r[0] for r in store.db.conn.execute("SELECT sent_at FROM lag WHERE target_id = ?", [target])}
    assert sent == {5.0}
    assert outbox.apply_handle(target, "job-2", HandleStatus("failed"), 2) == 2
    assert outbox_rows(store, target) == dict.fromkeys([key(4), key(5), key(6)], "queued")
    assert members(store, target) == {key(1), key(2), key(3)}
