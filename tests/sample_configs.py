"""Config snippets the tests compose: the standard source and audiences, and a file destination."""

from collections.abc import Callable
from pathlib import Path

SOURCE_COLUMNS = """
id_column = "profile_id"
stage_column = "stage"
in_flow_column = "in_flows"
changed_at_column = "stage_changed_at"
consent_column = "ads_consent"
default_country = "US"
"""
"""The demo columns every source kind names: id, stage, in-flow tags, change time, consent."""

IDENTIFIERS = """
[source.identifiers]
email = "email"
phone = "phone"
first_name = "first_name"
last_name = "last_name"
zip = "postcode"
country = "country"
"""
"""The demo's identifier columns."""

SOURCE_TABLE = (
    """
state_path = "state.db"

[source]
kind = "sqlite"
path = "profiles.db"
table = "profiles"
"""
    + SOURCE_COLUMNS
    + IDENTIFIERS
)
"""The demo database as the source: its table, columns and identifiers, with no audiences."""

STAGE_AND_FLOW_AUDIENCES = """
[audiences.lapsed]
stage = "lapsed_customer"

[audiences.in_checkout]
in_flow = "abandoned_checkout"
"""
"""An audience by stage and one by flow."""

FLAG_AUDIENCE = """
[audiences.winback]
flag = "winback_eligible"
"""
"""An audience by a boolean column."""

SOURCE = (
    SOURCE_TABLE
    + STAGE_AND_FLOW_AUDIENCES
    + """
[audiences.vip]
stage = "vip"
"""
)


def syncs(*audiences: str, destinations: tuple[str, ...] = ("files",), max_lag: str | None = None) -> str:
    """One ``[[syncs]]`` table per audience to ``destinations``, each with ``max_lag`` when given."""
    to = ", ".join(f'"{d}"' for d in destinations)
    lag = f'max_lag = "{max_lag}"\n' if max_lag else ""
    return "".join(f'\n[[syncs]]\naudience = "{a}"\ndestinations = [{to}]\n{lag}' for a in audiences)


FILES = """
[destinations.files]
platform = "file"
directory = "exports"
"""
"""The file destination ``files``, writing into the folder ``exports``."""


def file_syncs(*audiences: str, max_lag: str | None = None, file_format: str | None = None) -> str:
    """The file destination ``files`` and one ``[[syncs]]`` per audience to it."""
    fmt = f'format = "{file_format}"\n' if file_format else ""
    return FILES + fmt + syncs(*audiences, max_lag=max_lag)


def meta_main(endpoint: str, max_wait_seconds: int = 5) -> str:
    """The Meta destination ``meta_main`` on an emulator at ``endpoint``, its token in $META_TEST_TOKEN."""
    return f"""
[destinations.meta_main]
platform = "meta"
ad_account_id = "act_1234567890"
access_token_env = "META_TEST_TOKEN"
endpoint = "{endpoint}"
max_wait_seconds = {max_wait_seconds}
"""


# Meta on an emulator at ``{endpoint}`` (a str.format field) and the file destination, with the stage,
# flow and flag audiences synced to them.
META_AND_FILES = (
    meta_main("{endpoint}")
    + FILES
    + syncs("lapsed", destinations=("meta_main", "files"))
    + syncs("in_checkout")
    + syncs("winback", destinations=("meta_main", "files"))
)

FILE_DESTINATION = file_syncs("lapsed", "in_checkout", "vip", file_format="meta")

# write_config(extra=FILE_DESTINATION, *, source=SOURCE, name=...) -> the config file's path
WriteConfig = Callable[..., Path]
