"""The Graph API emulator on its own, over plain HTTP: validation, sessions, removes, admin surface."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from audiencesync.connectors.meta.emulator import MetaEmulator, start_emulator

TOKEN = "any-token"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def emulator() -> Iterator[MetaEmulator]:
    emu = start_emulator()
    yield emu
    emu.stop()


def api(emu: MetaEmulator, verb: str, path: str, token: str | None = TOKEN, **form: Any) -> requests.Response:
    data = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in form.items()}
    params = {"access_token": token} if token else {}
    if verb == "GET":
        return requests.get(f"{emu.url}/v25.0/{path}", params={**params, **data}, timeout=5)
    return requests.request(verb, f"{emu.url}/v25.0/{path}", params=params, data=data, timeout=5)


def create(emu: MetaEmulator, name: str = "vip") -> str:
    resp = api(emu, "POST", "act_1/customaudiences", name=name, subtype="CUSTOM", description="d")
    assert resp.status_code == 200
    return str(resp.json()["id"])


def payload(*rows: list[str]) -> dict[str, Any]:
    return {"schema": ["EMAIL", "EXTERN_ID"], "data": [list(r) for r in rows]}


def error_of(resp: requests.Response) -> tuple[int, int | None]:
    error = resp.json()["error"]
    assert {"message", "type", "code", "fbtrace_id", "is_transient"} <= set(error)
    return error["code"], error.get("error_subcode")


def test_a_token_is_required_by_parameter_or_bearer_header(emulator: MetaEmulator) -> None:
    assert error_of(api(emulator, "GET", "act_1/customaudiences", token=None)) == (190, None)
    resp = requests.get(
        f"{emulator.url}/v25.0/act_1/customaudiences", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert resp.status_code == 200


def test_an_expected_token_refuses_others(emulator: MetaEmulator) -> None:
    emulator.faults.set({"expected_token": "right"})
    assert error_of(api(emulator, "GET", "act_1/customaudiences", token="wrong"))[0] == 190
    assert api(emulator, "GET", "act_1/customaudiences", token="right").status_code == 200


def test_add_and_all_three_forms_of_remove(emulator: MetaEmulator) -> None:
    aid = create(emulator)
    rows = [[h(f"u{i}"), f"x{i}"] for i in range(4)]
    body = api(emulator, "POST", f"{aid}/users", payload=payload(*rows)).json()
    assert body["num_received"] == 4 and body["num_invalid_entries"] == 0
    api(emulator, "POST", f"{aid}/users", payload=payload(rows[0]), method="DELETE")
    api(emulator, "DELETE", f"{aid}/users", payload=payload(rows[1]))
    api(emulator, "POST", f"{aid}/users", payload=payload([rows[2][0], "other"]), method="DELETE")
    assert emulator.members(aid) == {tuple(rows[2]), tuple(rows[3])}  # removal takes the exact row only


def test_rows_are_validated_like_meta(emulator: MetaEmulator) -> None:
    aid = create(emulator)
    short = api(emulator, "POST", f"{aid}/users", payload={"schema": ["EMAIL", "PHONE"], "data": [["a"]]})
    assert error_of(short) == (100, None)
    too_many = payload(*([h("x"), "1"] for _ in range(10_001)))
    assert error_of(api(emulator, "POST", f"{aid}/users", payload=too_many)) == (100, None)
    mixed = api(
        emulator, "POST", f"{aid}/users", payload=payload([h("ok"), "raw-id"], ["NotHex", "y"])
    ).json()
    assert mixed["num_invalid_entries"] == 1 and list(mixed["invalid_entry_samples"]) == ["NotHex"]
    assert emulator.members(aid) == {(h("ok"), "raw-id")}
    other_schema = api(emulator, "POST", f"{aid}/users", payload={"schema": ["EMAIL"], "data": [[h("a")]]})
    assert error_of(other_schema) == (2650, None)


def test_a_single_key_upload_is_taken_and_mixing_it_with_a_multi_key_audience_is_2650(
    emulator: MetaEmulator,
) -> None:
    single = create(emulator, "single")
    body = api(emulator, "POST", f"{single}/users", payload={"schema": "EMAIL_SHA256", "data": [h("a"), "x"]})
    assert body.json()["num_received"] == 2 and list(body.json()["invalid_entry_samples"]) == ["x"]
    assert emulator.members(single) == {(h("a"),)}
    multi = create(emulator, "multi")
    api(emulator, "POST", f"{multi}/users", payload=payload([h("b"), "id-b"]))
    mixed = api(emulator, "POST", f"{multi}/users", payload={"schema": "EMAIL_SHA256", "data": [h("b")]})
    assert error_of(mixed) == (2650, None)  # facebook/facebook-python-business-sdk#433
    devices = create(emulator, "devices")
    raw = api(
        emulator, "POST", f"{devices}/users", payload={"schema": "MOBILE_ADVERTISER_ID", "data": ["ab-12"]}
    )
    assert raw.json()["num_invalid_entries"] == 0


def test_an_unknown_customer_file_source_is_refused(emulator: MetaEmulator) -> None:
    resp = api(
        emulator, "POST", "act_1/customaudiences", name="n", subtype="CUSTOM", customer_file_source="MINE"
    )
    assert error_of(resp) == (100, None)


def test_the_payload_may_come_as_a_multipart_part_and_is_validated_the_same(emulator: MetaEmulator) -> None:
    aid = create(emulator)

    def post(rows: list[list[str]], **fields: str) -> requests.Response:
        part = json.dumps(payload(*rows)).encode()
        return requests.post(
            f"{emulator.url}/v25.0/{aid}/users",
            params={"access_token": TOKEN},
            data=fields,
            files={"payload": (None, part)},
            timeout=5,
        )

    good = [[h("a"), "id-a"], [h("b"), ""], ["", "id-c"]]
    assert post(good).json()["num_invalid_entries"] == 0
    assert emulator.members(aid) == {tuple(r) for r in good}
    mixed = post([[h("d"), "x"], [h("e").upper(), "y"]]).json()
    assert mixed["num_invalid_entries"] == 1 and list(mixed["invalid_entry_samples"]) == [h("e").upper()]
    post([good[0]], method="DELETE")
    assert emulator.members(aid) == {tuple(good[1]), tuple(good[2]), (h("d"), "x")}
    broken = requests.post(
        f"{emulator.url}/v25.0/{aid}/users",
        params={"access_token": TOKEN},
        data=b"--b\r\nno headers",
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        timeout=5,
    )
    assert error_of(broken) == (100, None)


def test_sessions_take_batches_in_order_and_end_with_the_last(emulator: MetaEmulator) -> None:
    aid = create(emulator)

    def send(seq: int, last: bool = False) -> requests.Response:
        session = {"session_id": 9, "batch_seq": seq, "last_batch_flag": last, "estimated_num_total": 3}
        return api(emulator, "POST", f"{aid}/users", payload=payload([h(str(seq)), ""]), session=session)

    assert send(1).status_code == 200
    assert error_of(send(3)) == (100, None)
    assert send(2).status_code == 200
    assert send(2).status_code == 200  # a resend of the last batch is taken again
    assert send(3, last=True).status_code == 200
    assert error_of(send(4)) == (100, None)
    assert len(emulator.members(aid)) == 3


def test_find_by_name_pages_through_the_list(emulator: MetaEmulator) -> None:
    ids = [create(emulator, f"a{i}") for i in range(5)]
    first = api(emulator, "GET", "act_1/customaudiences", limit="2").json()
    assert [a["id"] for a in first["data"]] == ids[:2] and "next" in first["paging"]
    rest = api(
        emulator, "GET", "act_1/customaudiences", limit="10", after=first["paging"]["cursors"]["after"]
    ).json()
    assert [a["id"] for a in rest["data"]] == ids[2:] and "next" not in rest["paging"]


def test_fault_switches_answer_like_meta(emulator: MetaEmulator) -> None:
    aid = create(emulator)
    emulator.faults.set({"throttle_rate": 1.0, "throttle_code": 17, "regain_minutes": 4})
    resp = api(emulator, "GET", aid)
    assert error_of(resp) == (17, None)
    assert (
        json.loads(resp.headers["X-Business-Use-Case-Usage"])["act"][0]["estimated_time_to_regain_access"]
        == 4
    )
    emulator.faults.set({"throttle_rate": 0.0, "html_rate": 1.0})
    assert api(emulator, "GET", aid).headers["Content-Type"].startswith("text/html")
    emulator.faults.set({"html_rate": 0.0, "force_error": "flagged"})
    assert error_of(api(emulator, "GET", aid)) == (100, 1713230)
    emulator.faults.set({"force_error": None, "drop_rate": 1.0})
    with pytest.raises(requests.ConnectionError):
        api(emulator, "GET", aid)


def test_versions_meta_has_retired_answer_2635_and_a_warning_header_rides_every_answer(
    emulator: MetaEmulator,
) -> None:
    emulator.faults.set({"deprecated_versions": ["v25.0"], "version_warning": "auto-upgraded"})
    resp = api(emulator, "GET", "act_1/customaudiences")
    assert error_of(resp) == (2635, None) and "deprecated version" in resp.json()["error"]["message"]
    assert resp.headers["X-Ad-Api-Version-Warning"] == "auto-upgraded"
    served = requests.get(
        f"{emulator.url}/v26.0/act_1/customaudiences", params={"access_token": TOKEN}, timeout=5
    )
    assert served.status_code == 200 and served.headers["X-Ad-Api-Version-Warning"] == "auto-upgraded"


def test_admin_surface_lists_members_and_resets(emulator: MetaEmulator) -> None:
    aid = create(emulator)
    api(emulator, "POST", f"{aid}/users", payload=payload([h("u"), "x"]))
    state = requests.get(f"{emulator.admin_url}/_emulator/state", timeout=5).json()
    assert state["audiences"] == [
        {"id": aid, "name": "vip", "schema": ["EMAIL", "EXTERN_ID"], "members": [[h("u"), "x"]]}
    ]
    bad = requests.post(f"{emulator.admin_url}/_emulator/faults", json={"nonsense": 1}, timeout=5)
    assert bad.status_code == 400
    requests.post(f"{emulator.admin_url}/_emulator/reset", timeout=5)
    assert requests.get(f"{emulator.admin_url}/_emulator/state", timeout=5).json() == {"audiences": []}
