"""The TikTok Business API emulator, spoken to over HTTP as TikTok would be: validation, membership,
file flow, the fault switches and the admin surface."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from audiencesync.connectors.tiktok.emulator import TikTokEmulator, start_emulator

ADV = "7000000000000000042"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def tiktok_server() -> Iterator[TikTokEmulator]:
    emulator = start_emulator(advertisers=(ADV,))
    yield emulator
    emulator.stop()


class Client:
    """Calls the emulator's API with a token, and its admin surface."""

    def __init__(self, emulator: TikTokEmulator) -> None:
        self.emulator = emulator
        self.http = requests.Session()
        self.http.headers["Access-Token"] = "any-token"
        self.api = f"{emulator.url}/open_api/v1.3/"

    def post(self, route: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.post(self.api + route, timeout=5, **kwargs)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def get(self, route: str, **params: Any) -> dict[str, Any]:
        response = self.http.get(self.api + route, params=params, timeout=5)
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    def faults(self, **switches: Any) -> requests.Response:
        return self.http.post(f"{self.emulator.admin_url}/_emulator/faults", json=switches, timeout=5)

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"{self.emulator.admin_url}/_emulator/state", timeout=5).json()
        return body

    def members(self, audience_id: str) -> set[tuple[str | None, ...]]:
        (audience,) = [a for a in self.state()["audiences"] if a["id"] == audience_id]
        return {tuple(m) for m in audience["members"]}

    def create(self, name: str = "vip") -> str:
        body = self.post(
            "segment/audience/",
            json={
                "advertiser_id": ADV,
                "custom_audience_name": name,
                "id_type": "EMAIL_SHA256",
                "action": "create",
            },
        )
        assert body["code"] == 0
        return str(body["data"]["audience_id"])

    def create_from_file(
        self, name: str, file_path: str, calculate_type: str = "EMAIL_SHA256"
    ) -> dict[str, Any]:
        """``dmp/custom_audience/create/`` with one uploaded file: the whole answer."""
        body = {
            "advertiser_id": ADV,
            "custom_audience_name": name,
            "calculate_type": calculate_type,
            "file_paths": [file_path],
        }
        return self.post("dmp/custom_audience/create/", json=body)

    def mapping(self, audience_id: str, action: str, rows: list[list[str | None]]) -> dict[str, Any]:
        batch = [[{"id": v, "audience_ids": [audience_id]} if v else {} for v in row] for row in rows]
        return self.post(
            "segment/mapping/",
            json={
                "advertiser_ids": [ADV],
                "action": action,
                "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
                "batch_data": batch,
            },
        )

    def upload(
        self, lines: list[str], calculate_type: str = "EMAIL_SHA256", signature: str | None = None
    ) -> Any:
        content = ("\n".join(lines) + "\n").encode()
        fields = {
            "advertiser_id": ADV,
            "calculate_type": calculate_type,
            "file_name": "f.csv",
            "file_signature": signature or hashlib.md5(content).hexdigest(),
        }
        return self.post("dmp/custom_audience/file/upload/", data=fields, files={"file": ("f.csv", content)})


@pytest.fixture
def client(tiktok_server: TikTokEmulator) -> Iterator[Client]:
    c = Client(tiktok_server)
    c.http.post(f"{tiktok_server.admin_url}/_emulator/reset", timeout=5).raise_for_status()
    yield c
    c.http.close()


def test_errors_are_http_200_with_a_code_and_a_request_id(client: Client) -> None:
    client.faults(invalid_token=True)
    body = client.get("user/info/")
    assert body["code"] == 40105 and body["request_id"]


def test_a_call_without_a_token_is_refused_as_an_empty_token(client: Client) -> None:
    # tiktok_code.py: 40104 EMPTY_ACCESS_TOKEN.
    response = requests.get(client.api + "user/info/", timeout=5)
    assert response.json()["code"] == 40104


def test_the_expired_token_switch_answers_40102(client: Client) -> None:
    client.faults(expired_token=True)
    assert client.get("user/info/")["code"] == 40102


def test_an_unknown_advertiser_is_40007(client: Client) -> None:
    body = client.get("dmp/custom_audience/list/", advertiser_id="1", page=1, page_size=10)
    assert body["code"] == 40007


def test_mapping_add_and_delete_work_on_whole_people(client: Client) -> None:
    audience = client.create()
    a, b = [sha("a@x"), sha("+1")], [sha("b@x"), None]
    assert client.mapping(audience, "add", [a, b])["code"] == 0
    assert client.members(audience) == {tuple(a), tuple(b)}

    # The same email with another phone is another person: deleting it leaves ``a`` in place.
    assert client.mapping(audience, "delete", [[sha("a@x"), sha("+2")], b])["code"] == 0
    assert client.members(audience) == {tuple(a)}


def test_mapping_files_each_person_under_the_audiences_its_ids_name(client: Client) -> None:
    one, two = client.create("one"), client.create("two")
    full, partial = [sha("a"), sha("+1")], [None, sha("+2")]
    # Every id names the same audience; a person with no id at all joins nothing.
    assert client.mapping(one, "add", [full, partial, [None, None]])["code"] == 0
    assert client.members(one) == {tuple(full), tuple(partial)}
    # Ids naming different audiences: the person joins each audience any of its ids names.
    mixed = [[{"id": sha("b"), "audience_ids": [one]}, {"id": sha("+3"), "audience_ids": [two, one]}]]
    body = {"advertiser_ids": [ADV], "action": "add", "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"]}
    assert client.post("segment/mapping/", json={**body, "batch_data": mixed})["code"] == 0
    assert client.members(two) == {(sha("b"), sha("+3"))}
    assert (sha("b"), sha("+3")) in client.members(one)
    # A malformed entry is refused whole, whichever path checks it.
    bad = [[{"id": sha("c"), "audience_ids": [one]}, {"id": sha("+4"), "audience_ids": []}]]
    assert client.post("segment/mapping/", json={**body, "batch_data": bad})["code"] == 40002
    assert (sha("c"), sha("+4")) not in client.members(one)


def test_mapping_validates_ids_actions_audiences_and_size(client: Client) -> None:
    audience = client.create()
    assert client.mapping(audience, "add", [["NOT-HEX", None]])["code"] == 40062
    assert client.mapping(audience, "remove", [[sha("a"), None]])["code"] == 40002
    assert client.mapping("7999", "add", [[sha("a"), None]])["code"] == 40007
    client.faults(max_batch=2)
    too_large = client.mapping(audience, "add", [[sha(str(i)), None] for i in range(3)])
    # tiktok_code.py: 40061 INVALID_BATCH_SIZE, never 40002 with a "too large" message.
    assert too_large["code"] == 40061
    assert client.members(audience) == set()


def test_audience_names_are_cut_at_70_characters_and_listed_in_pages(client: Client) -> None:
    for i in range(3):
        client.create(f"{i}-" + "n" * 80)
    page = client.get("dmp/custom_audience/list/", advertiser_id=ADV, page=2, page_size=2)["data"]
    assert page["page_info"]["total_page"] == 2
    (third,) = page["list"]
    assert third["name"] == ("2-" + "n" * 80)[:67] + "..."
    assert client.get("dmp/custom_audience/list/", advertiser_id=ADV, page=1, page_size=101)["code"] == 40002


def test_get_takes_a_json_array_and_refuses_unknown_ids(client: Client) -> None:
    audience = client.create()
    found = client.get("dmp/custom_audience/get/", advertiser_id=ADV, custom_audience_ids=f'["{audience}"]')
    assert found["data"]["list"][0]["audience_details"]["audience_id"] == audience
    missing = client.get("dmp/custom_audience/get/", advertiser_id=ADV, custom_audience_ids='["7999"]')
    assert missing["code"] == 40007


def test_cover_num_waits_for_the_recalculation_delay(client: Client) -> None:
    audience = client.create()
    client.faults(recalc_delay_seconds=60)
    client.mapping(audience, "add", [[sha("a"), None]])
    details = client.get("dmp/custom_audience/get/", advertiser_id=ADV, custom_audience_ids=f'["{audience}"]')
    assert (
        details["data"]["list"][0]["audience_details"].items() >= {"cover_num": 0, "is_valid": False}.items()
    )
    client.faults(recalc_delay_seconds=0)
    details = client.get("dmp/custom_audience/get/", advertiser_id=ADV, custom_audience_ids=f'["{audience}"]')
    assert (
        details["data"]["list"][0]["audience_details"].items() >= {"cover_num": 1, "is_valid": True}.items()
    )


def test_rejected_ids_are_accepted_silently_and_left_out_of_cover_num(client: Client) -> None:
    client.faults(reject_id_rate=0.3)
    audience = client.create()
    rows: list[list[str | None]] = [[sha(f"p{i}"), None] for i in range(1_000)]
    assert client.mapping(audience, "add", rows)["code"] == 0
    (entry,) = client.state()["audiences"]
    assert len(entry["members"]) == 1_000
    assert entry["cover_num"] == 1_000 - entry["unmatched"]
    assert 200 < entry["unmatched"] < 400
    # Which ids match is a property of the ids, not of the request.
    second = client.create("again")
    client.mapping(second, "add", rows)
    assert {a["unmatched"] for a in client.state()["audiences"]} == {entry["unmatched"]}


def test_file_flow_upload_create_append_remove(client: Client) -> None:
    first = client.upload([sha(f"e{i}") for i in range(1_500)])["data"]["file_path"]
    created = client.create_from_file("file audience", first)
    audience = created["data"]["custom_audience_id"]
    more = client.upload([sha("late")])["data"]["file_path"]
    update = {"advertiser_id": ADV, "custom_audience_id": audience, "file_paths": [more]}
    assert client.post("dmp/custom_audience/update/", json={**update, "action": "APPEND"})["code"] == 0
    few = client.upload([sha(f"e{i}") for i in range(100)])["data"]["file_path"]
    remove = {**update, "file_paths": [few], "action": "REMOVE"}
    assert client.post("dmp/custom_audience/update/", json=remove)["code"] == 0
    assert len(client.members(audience)) == 1_401


def test_file_update_without_an_action_replaces_as_tiktok_does(client: Client) -> None:
    first = client.upload([sha(f"e{i}") for i in range(10)])["data"]["file_path"]
    replacement = [sha(f"r{i}") for i in range(1_000)]
    audience = client.create_from_file("f", first)["data"]["custom_audience_id"]
    other = client.upload(replacement)["data"]["file_path"]
    answer = client.post(
        "dmp/custom_audience/update/",
        json={"advertiser_id": ADV, "custom_audience_id": audience, "file_paths": [other]},
    )
    assert answer["code"] == 0
    assert client.members(audience) == {(h,) for h in replacement}


def test_file_rules_signature_types_and_the_1000_floor(client: Client) -> None:
    assert client.upload([sha("a")], signature="0" * 32)["code"] == 40002
    assert client.upload(["plain@example.com"])["code"] == 40062
    multi = client.upload(["EMAIL_SHA256,PHONE_SHA256", f"{sha('a')},", f",{sha('+1')}"], "MULTIPLE_TYPES")
    path = multi["data"]["file_path"]
    audience = client.create_from_file("m", path, "MULTIPLE_TYPES")["data"]["custom_audience_id"]
    assert client.members(audience) == {(sha("a"), None), (None, sha("+1"))}
    remove = {"advertiser_id": ADV, "custom_audience_id": audience, "file_paths": [path], "action": "REMOVE"}
    refused = client.post("dmp/custom_audience/update/", json=remove)
    assert refused["code"] == 40002 and "1000" in refused["message"]


@pytest.mark.parametrize("action", ["APPEND", "REMOVE", "REPLACE"])
def test_every_file_update_action_fails_under_1000_members_afterwards(client: Client, action: str) -> None:
    # python_sdk/docs/CustomAudienceUpdateBody.md: all three actions fail when the audience has fewer
    # than 1,000 members after the operation.
    first = client.upload([sha(f"e{i}") for i in range(500)])["data"]["file_path"]
    audience = client.create_from_file("small", first)["data"]["custom_audience_id"]
    change = client.upload([sha(f"e{i}") for i in range(10)])["data"]["file_path"]
    update = {"advertiser_id": ADV, "custom_audience_id": audience, "file_paths": [change], "action": action}
    refused = client.post("dmp/custom_audience/update/", json=update)
    assert refused["code"] == 40002 and "1000" in refused["message"]
    assert len(client.members(audience)) == 500


def test_an_append_that_reaches_1000_members_is_accepted(client: Client) -> None:
    first = client.upload([sha(f"e{i}") for i in range(900)])["data"]["file_path"]
    audience = client.create_from_file("growing", first)["data"]["custom_audience_id"]
    more = client.upload([sha(f"m{i}") for i in range(100)])["data"]["file_path"]
    update = {"advertiser_id": ADV, "custom_audience_id": audience, "file_paths": [more], "action": "APPEND"}
    assert client.post("dmp/custom_audience/update/", json=update)["code"] == 0
    assert len(client.members(audience)) == 1_000


@pytest.mark.parametrize("calculate_type", ["AAID_SHA256", "EMAIL", "email_sha256", ""])
def test_upload_refuses_a_calculate_type_outside_the_strict_enum(client: Client, calculate_type: str) -> None:
    # yml_files/dmp_custom_audience_file_upload.yml: the enum is strict and has no AAID_SHA256.
    assert client.upload([sha("a")], calculate_type)["code"] == 40002


def test_upload_takes_gaid_sha256_for_android_ids(client: Client) -> None:
    assert client.upload([sha("device")], "GAID_SHA256")["code"] == 0


def test_a_file_over_max_batch_is_file_too_large(client: Client) -> None:
    client.faults(max_batch=2)
    # tiktok_code.py: 40907 FILE_TOO_LARGE.
    assert client.upload([sha(str(i)) for i in range(3)])["code"] == 40907


@pytest.mark.parametrize(
    ("switch", "code"),
    [("rate_limit_rate", 40100), ("server_error_rate", 50000), ("write_conflict_rate", 40202)],
)
def test_rate_switches_answer_with_tiktoks_codes(client: Client, switch: str, code: int) -> None:
    client.faults(**{switch: 1.0})
    assert client.get("user/info/")["code"] == code


@pytest.mark.parametrize("code", [40100, 40132, 61000])
def test_the_rate_limit_code_switch_picks_one_of_tiktoks_throttling_codes(client: Client, code: int) -> None:
    client.faults(rate_limit_rate=1.0, rate_limit_code=code)
    assert client.get("user/info/")["code"] == code


def test_a_partial_ok_answer_still_applies_the_change(client: Client) -> None:
    audience = client.create()
    client.faults(partial_ok_rate=1.0)
    answer = client.mapping(audience, "add", [[sha("a"), None]])
    assert answer["code"] == 20001
    assert client.members(audience) == {(sha("a"), None)}


def test_permission_denied_switch(client: Client) -> None:
    client.faults(permission_denied=True)
    assert client.get("user/info/")["code"] == 40001


def test_http_errors_come_without_the_envelope(client: Client) -> None:
    client.faults(http_error_rate=1.0)
    response = client.http.get(client.api + "user/info/", timeout=5)
    assert response.status_code == 503
    assert "json" not in response.headers["Content-Type"]


def test_dropped_connections_close_without_an_answer(client: Client) -> None:
    client.faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        client.http.get(client.api + "user/info/", timeout=5)


def test_a_timed_out_call_was_still_applied(client: Client) -> None:
    audience = client.create()
    client.faults(timeout_rate=1.0, timeout_seconds=0.3)
    with pytest.raises(requests.Timeout):
        client.http.post(
            client.api + "segment/mapping/",
            json={
                "advertiser_ids": [ADV],
                "action": "add",
                "id_schema": ["EMAIL_SHA256"],
                "batch_data": [[{"id": sha("a"), "audience_ids": [audience]}]],
            },
            timeout=0.1,
        )
    assert client.members(audience) == {(sha("a"),)}


def test_admin_surface_refuses_unknown_switches_and_resets(client: Client) -> None:
    assert client.faults(no_such_switch=1).status_code == 400
    client.create()
    client.http.post(f"{client.emulator.admin_url}/_emulator/reset", timeout=5)
    assert client.state()["audiences"] == []


def test_start_emulator_refuses_unknown_options() -> None:
    with pytest.raises(TypeError):
        start_emulator(no_such_option=1)


def test_serve_prints_where_it_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"from audiencesync.connectors.tiktok.emulator import serve; serve({port})"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/open_api/v1.3/" in line
        body = requests.get(f"http://127.0.0.1:{port}/_emulator/state", timeout=5).json()
        assert body == {"audiences": [], "files": 0}
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_an_upload_must_be_a_csv_or_txt_file(client: Client) -> None:
    # yml_files/dmp_custom_audience_file_upload.yml: "The file suffixes should exactly be .csv or .txt."
    content = (sha("a") + "\n").encode()
    fields = {
        "advertiser_id": ADV,
        "calculate_type": "EMAIL_SHA256",
        "file_signature": hashlib.md5(content).hexdigest(),
    }
    answer = client.post(
        "dmp/custom_audience/file/upload/", data=fields, files={"file": ("ids.json", content)}
    )
    assert answer["code"] == 40908
    ok = client.post("dmp/custom_audience/file/upload/", data=fields, files={"file": ("ids.txt", content)})
    assert ok["code"] == 0
