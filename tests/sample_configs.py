"""Config snippets the tests compose: the standard source and audiences, and a file destination."""

from collections.abc import Callable
from pathlib import Path

SOURCE_TABLE = """
state_path = "state.db"

[source]
kind = "sqlite"
path = "profiles.db"
table = "profiles"
id_column = "profile_id"
stage_column = "stage"
in_flow_column = "in_flows"
changed_at_column = "stage_changed_at"
consent_column = "ads_consent"
default_country = "US"

[source.identifiers]
email = "email"
phone = "phone"
first_name = "first_name"
last_name = "last_name"
zip = "postcode"
country = "country"
"""
"""The demo database as the source: its table, columns and identifiers, with no audiences."""

STAGE_AND_FLOW_AUDIENCES = """
[audiences.lapsed]
stage = "lapsed_customer"

[audiences.in_checkout]
in_flow = "abandoned_checkout"
"""
"""An audience by stage and one by flow."""

SOURCE = (
    SOURCE_TABLE
    + STAGE_AND_FLOW_AUDIENCES
    + """
[audiences.vip]
stage = "vip"
"""
)


def file_syncs(*audiences: str, max_lag: str | None = None, file_format: str | None = None) -> str:
    """A file destination ``files`` (folder ``exports``) and one ``[[syncs]]`` per audience to it, each
    with ``max_lag`` when given."""
    fmt = f'format = "{file_format}"\n' if file_format else ""
    lag = f'max_lag = "{max_lag}"\n' if max_lag else ""
    syncs = "".join(f'\n[[syncs]]\naudience = "{a}"\ndestinations = ["files"]\n{lag}' for a in audiences)
    return f'\n[destinations.files]\nplatform = "file"\ndirectory = "exports"\n{fmt}{syncs}'


FILE_DESTINATION = file_syncs("lapsed", "in_checkout", "vip", file_format="meta")

# write_config(extra=FILE_DESTINATION, *, source=SOURCE, name=...) -> the config file's path
WriteConfig = Callable[..., Path]
