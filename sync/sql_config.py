"""The ``[source]`` keys of a SQL database or warehouse (``kind = "sql"``) and the audience keys only
it reads (``model``, ``params``). Kept beside ``config`` rather than in it, so that module stays
about the file as a whole; it needs nothing but the standard library."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SQL_SOURCE_KEYS = (
    "url_env",
    "url",
    "yield_per",
    "dbt_project_dir",
    "dbt_manifest",
    "dbt_profile",
    "dbt_target",
    "dbt_profiles_dir",
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SqlSettings:
    url: str = field(repr=False)
    """The SQLAlchemy URL, from ``url_env``, ``url`` or dbt's ``profiles.yml``; kept out of the repr,
    since it may hold a password."""
    yield_per: int = 5000
    """Rows fetched per round trip from a server-side cursor."""
    dbt_manifest: Path | None = None
    """A dbt ``target/manifest.json``; audiences naming a ``model`` read its relation from it."""


def url_has_password(url: str) -> bool:
    """True when ``dialect+driver://user:password@host/...`` carries a password. Parsed by hand:
    ``urlsplit`` does not split the authority of schemes holding an underscore
    (``redshift+redshift_connector``), which SQLAlchemy URLs may."""
    _, sep, rest = url.partition("://")
    if not sep:
        return False
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, _ = authority.rpartition("@")
    return bool(at) and ":" in userinfo and bool(userinfo.split(":", 1)[1])


def parse_sql_source(
    raw: Mapping[str, Any], base: Path, env: Mapping[str, str], add: Callable[[str, str], None]
) -> SqlSettings | None:
    """Validate the SQL keys of ``[source]``, reporting each problem through ``add(key, message)``."""
    url: str | None = None
    literal, env_name = raw.get("url"), raw.get("url_env")
    if literal is not None and env_name is not None:
        add("source.url", "use url_env or url, not both")
    elif literal is not None:
        if not isinstance(literal, str) or not literal:
            add("source.url", "must be a SQLAlchemy URL such as duckdb:///profiles.duckdb")
        elif url_has_password(literal):
            # The message never repeats the value: it holds a password.
            add(
                "source.url",
                "holds a password; put the URL in an environment variable and name it in url_env",
            )
        else:
            url = literal
    elif env_name is not None:
        if not isinstance(env_name, str) or not _ENV_NAME.fullmatch(env_name):
            add("source.url_env", "must name an environment variable (letters, digits, underscore)")
        elif not env.get(env_name):
            add("source.url_env", f"environment variable {env_name} is not set (it holds the database URL)")
        else:
            url = env[env_name]
    elif isinstance(raw.get("dbt_project_dir"), str) or isinstance(raw.get("dbt_profile"), str):
        url = _dbt_profile_url(raw, base, env, add)
    else:
        add(
            "source.url_env",
            'required for kind = "sql": the environment variable holding the database URL '
            "(or dbt_project_dir, to use the connection in dbt's profiles.yml)",
        )
    for key in ("dbt_profile", "dbt_target", "dbt_profiles_dir"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            add(f"source.{key}", "must be a non-empty string")
        elif value is not None and (literal is not None or env_name is not None):
            add(f"source.{key}", "the connection comes from url_env or url; drop one")
    yield_per = raw.get("yield_per", 5000)
    if isinstance(yield_per, bool) or not isinstance(yield_per, int) or not 1 <= yield_per <= 1_000_000:
        add("source.yield_per", "must be a whole number from 1 to 1000000")
        yield_per = 5000
    manifest: Path | None = None
    for key in ("dbt_manifest", "dbt_project_dir"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            add(f"source.{key}", "must be a path")
    if isinstance(raw.get("dbt_manifest"), str) and raw["dbt_manifest"]:
        manifest = base / raw["dbt_manifest"]
    elif isinstance(raw.get("dbt_project_dir"), str) and raw["dbt_project_dir"]:
        manifest = base / raw["dbt_project_dir"] / "target" / "manifest.json"
    if url is None:
        return None
    return SqlSettings(url=url, yield_per=yield_per, dbt_manifest=manifest)


def _dbt_profile_url(
    raw: Mapping[str, Any], base: Path, env: Mapping[str, str], add: Callable[[str, str], None]
) -> str | None:
    """The URL of the dbt target the source names (``audiencesync.sync.dbt_profiles``)."""
    from audiencesync.sync.dbt_profiles import ProfileChoice, ProfileError, profile_url

    def text(key: str) -> str | None:
        value = raw.get(key)
        return value if isinstance(value, str) and value else None

    project = text("dbt_project_dir")
    profiles_dir = text("dbt_profiles_dir")
    choice = ProfileChoice(
        project_dir=base / project if project else base,
        profile=text("dbt_profile"),
        target=text("dbt_target"),
        profiles_dir=base / profiles_dir if profiles_dir else None,
    )
    try:
        return profile_url(choice, env)
    except ProfileError as exc:
        add(exc.key, exc.message)
        return None


def check_sql_audience(spec: Mapping[str, Any], kind: str | None) -> Iterator[tuple[str, str]]:
    """``(key, message)`` for each problem with an audience's ``model`` or ``params`` (``flag`` and
    ``where`` work on every source kind and are checked with the other definitions)."""
    model, params = spec.get("model"), spec.get("params")
    if model is not None:
        if not isinstance(model, str) or not model:
            yield "model", "must name a dbt model"
        elif kind not in (None, "sql"):
            yield "model", 'dbt models need a kind = "sql" source'
    if params is not None:
        if not isinstance(params, dict):
            yield "params", "must be a table of bound parameters (:name in the query)"
        elif spec.get("query") is None:
            yield "params", "only a query takes bound parameters"
        elif kind not in (None, "sql"):
            yield "params", 'bound parameters need a kind = "sql" source'
