"""The GAQL subset the Google emulator answers (SELECT ... FROM user_list | offline_user_data_job
[WHERE] [ORDER BY] [LIMIT]): the fields of each resource, and the parser. Field names follow the
google-ads resources (google/ads/googleads/vNN/resources/types/{user_list,offline_user_data_job}.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from audiencesync.connectors.google.emulator_errors import _AdsFailure, _fail
from audiencesync.connectors.google.emulator_store import _Job, _UserList
from google.ads.googleads.v24.resources.types import offline_user_data_job as ads_job
from google.ads.googleads.v24.resources.types import user_list as ads_user_list


def _ads_list_fields(x: _UserList, rate: int) -> dict[str, Any]:
    size = len(x.members)
    enums = ads_user_list.UserList.meta.fields
    crm = ads_user_list.UserList.meta.fields["crm_based_user_list"].message.meta.fields
    return {
        "user_list.resource_name": x.ads_name,
        "user_list.id": x.id,
        "user_list.name": x.name,
        "user_list.description": x.description,
        "user_list.membership_life_span": x.life_span_days,
        "user_list.membership_status": enums["membership_status"].enum["OPEN"],
        "user_list.size_for_display": size,
        "user_list.size_for_search": size,
        "user_list.type": enums["type_"].enum["CRM_BASED"],
        "user_list.read_only": False,
        "user_list.eligible_for_search": size >= 1000,
        "user_list.eligible_for_display": size >= 100,
        "user_list.match_rate_percentage": rate if size else 0,
        "user_list.access_reason": enums["access_reason"].enum["OWNED"],
        "user_list.account_user_list_status": enums["account_user_list_status"].enum["ENABLED"],
        "user_list.crm_based_user_list.upload_key_type": crm["upload_key_type"].enum["CONTACT_INFO"],
        "user_list.crm_based_user_list.data_source_type": crm["data_source_type"].enum["FIRST_PARTY"],
    }


def _ads_job_fields(j: _Job, rate: int) -> dict[str, Any]:
    fields = ads_job.OfflineUserDataJob.meta.fields
    match_range = fields["operation_metadata"].message.meta.fields["match_rate_range"].enum
    return {
        "offline_user_data_job.resource_name": j.resource_name,
        "offline_user_data_job.id": j.id,
        "offline_user_data_job.type": fields["type_"].enum["CUSTOMER_MATCH_USER_LIST"],
        "offline_user_data_job.status": fields["status"].enum[j.status],
        "offline_user_data_job.failure_reason": fields["failure_reason"].enum[
            "UNKNOWN" if j.status == "FAILED" else "UNSPECIFIED"
        ],
        "offline_user_data_job.customer_match_user_list_metadata.user_list": (
            f"customers/{j.customer_id}/userLists/{j.user_list_id}"
        ),
        "offline_user_data_job.operation_metadata.match_rate_range": match_range[
            _ads_job_match_range(j, rate)
        ],
    }


def _ads_job_match_range(j: _Job, rate: int) -> str:
    """UNKNOWN until the job succeeds, and for a job of removes only (nothing to match). A successful
    job that applied no operation at all reads LESS_THAN_20: Google's "SUCCESS, but nothing was
    uploaded". Otherwise the bucket of the ``match_rate_percentage`` switch."""
    if j.status != "SUCCESS" or (j.counts["remove"] and not j.counts["create"]):
        return "UNKNOWN"
    if not j.counts["create"]:
        return "MATCH_RANGE_LESS_THAN_20"
    return f"MATCH_RANGE_{_match_bucket(rate)}"


_PROTO_NAMES = {"type": "type_"}


def _nest(row: dict[str, Any], selected: list[str]) -> dict[str, Any]:
    """The GoogleAdsRow mapping holding only the selected fields, as the real API answers."""
    out: dict[str, Any] = {}
    for path in selected:
        node = out
        parts = [_PROTO_NAMES.get(p, p) for p in path.split(".")]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = row[path]
    return out


# --- GAQL ---------------------------------------------------------------------------------------------

_GAQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<resource>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+ORDER\s+BY\s+(?P<order>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?"
    r"(?:\s+PARAMETERS\s+\S.*?)?\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_VALUE = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[\w.+-]+"
_CONDITION = re.compile(
    rf"\s*(?P<field>[\w.]+)\s*(?P<op>=|!=|NOT\s+IN|IN|NOT\s+LIKE|LIKE)\s*(?P<value>\((?:{_VALUE}|[\s,])*\)|{_VALUE})\s*(?:AND\b|$)",
    re.IGNORECASE,
)
_RESOURCES = {
    "user_list": frozenset(_ads_list_fields(_UserList(0, "", "", "", 0), 0)),
    "offline_user_data_job": frozenset(_ads_job_fields(_Job(0, "", 0, {}), 0)),
}


def _gaql_error(name: str, message: str) -> _AdsFailure:
    return _fail("query_error", name, message, [("query", None)])


def _literal(token: str) -> str:
    if token[:1] in ("'", '"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _as_text(value: Any) -> str:
    if hasattr(value, "name") and not isinstance(value, str):
        return str(value.name)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return str(value)


@dataclass
class _Query:
    resource: str
    fields: list[str]
    conditions: list[tuple[str, str, list[str]]]
    order: list[tuple[str, bool]]
    limit: int | None

    def run(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = [r for r in rows if all(_holds(r[f], op, values) for f, op, values in self.conditions)]
        for name, descending in reversed(self.order):
            out.sort(
                key=lambda r: _as_text(r[name]) if not isinstance(r[name], int) else r[name],
                reverse=descending,
            )
        return out[: self.limit] if self.limit is not None else out


def _holds(value: Any, op: str, values: list[str]) -> bool:
    text = _as_text(value)
    if op == "=":
        return text == values[0]
    if op == "!=":
        return text != values[0]
    if op in ("IN", "NOT IN"):
        return (text in values) == (op == "IN")
    pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in values[0])
    return bool(re.fullmatch(pattern, text, re.DOTALL)) == (op == "LIKE")


def _parse_gaql(query: str) -> _Query:
    match = _GAQL.match(query)
    if match is None:
        raise _gaql_error("UNEXPECTED_INPUT", "The emulator could not parse this GAQL query.")
    resource = match.group("resource").lower()
    if resource not in _RESOURCES:
        raise _gaql_error("BAD_RESOURCE_TYPE_IN_FROM_CLAUSE", f"The emulator cannot query FROM {resource}.")
    known = _RESOURCES[resource]
    fields = [f.strip() for f in match.group("fields").split(",")]
    for name in fields:
        if name not in known:
            raise _gaql_error("UNRECOGNIZED_FIELD", f"Unrecognized field in the SELECT clause: '{name}'.")
    conditions: list[tuple[str, str, list[str]]] = []
    where = (match.group("where") or "").strip()
    pos = 0
    while pos < len(where):
        cond = _CONDITION.match(where, pos)
        if cond is None:
            raise _gaql_error("UNEXPECTED_INPUT", "The emulator could not parse the WHERE clause.")
        name, op, raw = (
            cond.group("field"),
            re.sub(r"\s+", " ", cond.group("op").upper()),
            cond.group("value"),
        )
        if name not in known:
            raise _gaql_error("UNRECOGNIZED_FIELD", f"Unrecognized field in the WHERE clause: '{name}'.")
        if op in ("IN", "NOT IN"):
            if not raw.startswith("("):
                raise _gaql_error("EXPECTED_LIST", "IN needs a parenthesized list.")
            values = [_literal(v) for v in re.findall(_VALUE, raw[1:-1])]
        else:
            if raw.startswith("("):
                raise _gaql_error("EXPECTED_SINGLE_VALUE", f"{op} needs a single value.")
            values = [_literal(raw)]
        conditions.append((name, op, values))
        pos = cond.end()
    order: list[tuple[str, bool]] = []
    for part in (match.group("order") or "").split(","):
        if not part.strip():
            continue
        words = part.split()
        if (
            words[0] not in known
            or len(words) > 2
            or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC"))
        ):
            raise _gaql_error("UNRECOGNIZED_FIELD", "Unrecognized ORDER BY clause.")
        order.append((words[0], len(words) == 2 and words[1].upper() == "DESC"))
    limit = int(match.group("limit")) if match.group("limit") else None
    return _Query(resource, fields, conditions, order, limit)


# --- Data Manager helpers ------------------------------------------------------------------------------


def _match_bucket(rate: int) -> str:
    """The match-rate bucket of a percentage, as both APIs' enums end (``LESS_THAN_20``, ``20_TO_30``,
    ``31_TO_40``... ``91_TO_100``): Data Manager prefixes ``MATCH_RATE_RANGE_``, Ads ``MATCH_RANGE_``."""
    if rate < 20:
        return "LESS_THAN_20"
    if rate <= 30:
        return "20_TO_30"
    if rate > 90:
        return "91_TO_100"
    low = (rate - 1) // 10 * 10 + 1
    return f"{low}_TO_{low + 9}"
