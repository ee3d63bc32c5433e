"""The SQLAlchemy URL of a dbt project's own connection, read from ``profiles.yml``, so a dbt user
names no second copy of their credentials.

Which profile and target, as dbt chooses them (https://docs.getdbt.com/docs/core/connect-data-platform/connection-profiles):
the profile is ``[source] dbt_profile``, else ``profile:`` in ``dbt_project.yml``; the target is
``dbt_target``, else ``DBT_TARGET``, else the profile's ``target:``. ``profiles.yml`` is looked for
in ``dbt_profiles_dir``, else ``DBT_PROFILES_DIR``, else the project folder, else ``~/.dbt``.

Values may use dbt's ``{{ env_var('NAME') }}`` and ``{{ env_var('NAME', 'default') }}``
(https://docs.getdbt.com/reference/dbt-jinja-functions/env_var), with the ``as_number``,
``as_text``, ``int`` and ``string`` filters. That subset is resolved here rather than through Jinja,
which only dbt-core installs; any other template is refused, naming the key. Messages name the file
and the key, never a value: a profile holds passwords.

The connection keys per adapter are those documented for dbt-postgres, dbt-redshift, dbt-duckdb,
dbt-snowflake, dbt-bigquery, dbt-databricks and dbt-mysql (docs.getdbt.com, "Connect data
platform" pages); postgres and duckdb are tested here against real databases, the others only by
the URL they produce.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_ENV_VAR = re.compile(
    r"""env_var\(\s*(['"])(?P<name>[A-Za-z_][A-Za-z0-9_]*)\1\s*(?:,\s*(['"])(?P<default>.*?)\3\s*)?\)"""
    r"""(?P<filters>(\s*\|\s*(as_number|as_text|int|string))*)$"""
)


class ProfileError(Exception):
    """A problem with the dbt profile: ``key`` is the config key it concerns."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ProfileChoice:
    project_dir: Path
    profile: str | None = None
    target: str | None = None
    profiles_dir: Path | None = None


def profiles_path(choice: ProfileChoice, env: Mapping[str, str]) -> Path:
    candidates = [choice.profiles_dir]
    if env.get("DBT_PROFILES_DIR"):
        candidates.append(Path(env["DBT_PROFILES_DIR"]).expanduser())
    candidates += [choice.project_dir, Path(env.get("HOME", os.path.expanduser("~"))) / ".dbt"]
    for folder in candidates:
        if folder is not None and (folder / "profiles.yml").is_file():
            return folder / "profiles.yml"
    looked = ", ".join(str(f) for f in candidates if f is not None)
    raise ProfileError("source.dbt_profiles_dir", f"no profiles.yml found (looked in {looked})")


def _yaml(path: Path, key: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ProfileError(key, "reading dbt's YAML needs PyYAML: pip install 'audience-sync[dbt]'") from None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        # The first line only: YAML errors quote the offending line, which may hold a password.
        raise ProfileError(key, f"{path}: not readable YAML ({type(exc).__name__})") from None


def project_profile(project_dir: Path) -> str:
    path = project_dir / "dbt_project.yml"
    if not path.is_file():
        raise ProfileError("source.dbt_profile", f"no dbt_project.yml in {project_dir}; name dbt_profile")
    data = _yaml(path, "source.dbt_project_dir")
    name = data.get("profile") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise ProfileError("source.dbt_profile", f"{path} names no profile; set dbt_profile")
    return name


def render(value: Any, env: Mapping[str, str], where: str) -> Any:
    """``value`` with dbt's ``env_var`` templates resolved (recursively in lists and tables)."""
    if isinstance(value, dict):
        return {k: render(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "{{" not in value:
        return value
    whole = _TEMPLATE.fullmatch(value.strip())

    def one(match: re.Match[str]) -> str:
        found = _ENV_VAR.match(match.group(1))
        if found is None:
            raise ProfileError(
                "source.dbt_profile",
                f"{where}: only {{{{ env_var('NAME') }}}} and {{{{ env_var('NAME', 'default') }}}} "
                "templates are understood here",
            )
        name, default = found.group("name"), found.group("default")
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ProfileError("source.dbt_profile", f"{where}: environment variable {name} is not set")

    text = _TEMPLATE.sub(one, value)
    if whole is not None and re.search(r"\|\s*(as_number|int)\s*$", whole.group(1)):
        try:
            return int(text)
        except ValueError:
            raise ProfileError("source.dbt_profile", f"{where}: is not a number") from None
    return text


def profile_output(choice: ProfileChoice, env: Mapping[str, str]) -> tuple[Path, str, dict[str, Any]]:
    """``(profiles.yml, where, output)``: the chosen target's connection, templates resolved."""
    path = profiles_path(choice, env)
    name = choice.profile or project_profile(choice.project_dir)
    data = _yaml(path, "source.dbt_profile")
    profile = data.get(name) if isinstance(data, dict) else None
    if not isinstance(profile, dict):
        raise ProfileError("source.dbt_profile", f"{path} has no profile {name!r}")
    target = choice.target or env.get("DBT_TARGET") or profile.get("target")
    outputs = profile.get("outputs")
    if (
        not isinstance(target, str)
        or not isinstance(outputs, dict)
        or not isinstance(outputs.get(target), dict)
    ):
        raise ProfileError("source.dbt_target", f"{path}: profile {name!r} has no output {target!r}")
    where = f"{path} {name}.outputs.{target}"
    return path, where, render(outputs[target], env, where)


def _need(output: Mapping[str, Any], where: str, *keys: str) -> str:
    for key in keys:
        value = output.get(key)
        if value not in (None, ""):
            return str(value)
    raise ProfileError("source.dbt_profile", f"{where}: no {keys[0]}")


def _auth(output: Mapping[str, Any], user_keys: tuple[str, ...] = ("user",)) -> str:
    user = next((str(output[k]) for k in user_keys if output.get(k)), "")
    password = output.get("password", output.get("pass"))
    if not user:
        return ""
    secret = f":{quote(str(password), safe='')}" if password not in (None, "") else ""
    return f"{quote(user, safe='')}{secret}@"


def _query(params: Mapping[str, Any]) -> str:
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"?{urlencode(kept)}" if kept else ""


def output_url(output: Mapping[str, Any], where: str, project_dir: Path) -> str:
    """The SQLAlchemy URL for one ``profiles.yml`` output (the drivers of this package's extras)."""
    kind = str(output.get("type", "")).lower()
    if kind in ("postgres", "redshift"):
        host = _need(output, where, "host")
        dbname = _need(output, where, "dbname", "database")
        port = output.get("port") or (5432 if kind == "postgres" else 5439)
        if kind == "postgres":
            # The target's schema is where an unqualified [source] table is found, as in dbt.
            schema = output.get("search_path") or output.get("schema")
            options = {
                "sslmode": output.get("sslmode"),
                "options": f"-csearch_path={schema}" if schema else None,
            }
            return f"postgresql+psycopg://{_auth(output)}{host}:{port}/{quote(dbname)}{_query(options)}"
        return f"redshift+redshift_connector://{_auth(output)}{host}:{port}/{quote(dbname)}"
    if kind == "duckdb":
        path = str(output.get("path") or ":memory:")
        if path == ":memory:" or path.startswith("md:"):
            raise ProfileError("source.dbt_profile", f"{where}: path must be a DuckDB database file")
        # dbt runs in the project folder, so a relative path is relative to it.
        return f"duckdb:///{(project_dir / Path(path).expanduser()).resolve()}"
    if kind == "snowflake":
        if output.get("private_key_path") or output.get("private_key"):
            raise ProfileError("source.dbt_profile", f"{where}: key-pair auth is not read here; set url_env")
        account = _need(output, where, "account")
        parts = "/".join(quote(str(output[k]), safe="") for k in ("database", "schema") if output.get(k))
        params = {k: output.get(k) for k in ("warehouse", "role", "authenticator")}
        return f"snowflake://{_auth(output)}{account}/{parts}{_query(params)}"
    if kind == "bigquery":
        project = _need(output, where, "project", "database")
        dataset = output.get("dataset") or output.get("schema") or ""
        method = output.get("method", "oauth")
        keyfile = output.get("keyfile") if method == "service-account" else None
        if method not in ("oauth", "service-account"):
            raise ProfileError(
                "source.dbt_profile", f"{where}: method {method!r} is not read here; set url_env"
            )
        return f"bigquery://{project}/{dataset}{_query({'credentials_path': keyfile})}"
    if kind == "databricks":
        host = _need(output, where, "host")
        token = quote(_need(output, where, "token"), safe="")
        params = {
            "http_path": output.get("http_path"),
            "catalog": output.get("catalog"),
            "schema": output.get("schema"),
        }
        return f"databricks://token:{token}@{host}{_query(params)}"
    if kind == "mysql":
        host = _need(output, where, "server", "host")
        port = output.get("port") or 3306
        schema = quote(_need(output, where, "schema", "database"))
        return f"mysql+pymysql://{_auth(output, ('username', 'user'))}{host}:{port}/{schema}"
    raise ProfileError(
        "source.dbt_profile", f"{where}: dbt adapter type {kind or '(none)'!r} is not read here; set url_env"
    )


def profile_url(choice: ProfileChoice, env: Mapping[str, str]) -> str:
    """The SQLAlchemy URL of ``choice``'s dbt target. Raises ``ProfileError``; never logs."""
    _, where, output = profile_output(choice, env)
    return output_url(output, where, choice.project_dir)
