"""Config snippets the tests compose: the standard source and audiences, and a file destination."""

from collections.abc import Callable
from pathlib import Path

SOURCE = """
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

[audiences.lapsed]
stage = "lapsed_customer"

[audiences.in_checkout]
in_flow = "abandoned_checkout"

[audiences.vip]
stage = "vip"
"""

FILE_DESTINATION = """
[destinations.files]
platform = "file"
directory = "exports"
format = "meta"

[[syncs]]
audience = "lapsed"
destinations = ["files"]

[[syncs]]
audience = "in_checkout"
destinations = ["files"]

[[syncs]]
audience = "vip"
destinations = ["files"]
"""

# write_config(extra=FILE_DESTINATION, *, source=SOURCE, name=...) -> the config file's path
WriteConfig = Callable[..., Path]
