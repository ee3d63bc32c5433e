"""dbt models as audiences, read from dbt's own artifacts without importing dbt-core.

- ``model_relation``: an audience's ``model`` resolves to ``database.schema.alias`` from
  ``target/manifest.json`` (the manifest's ``nodes``: ``resource_type``, ``name``, ``database``,
  ``schema``, ``alias``; https://docs.getdbt.com/reference/artifacts/manifest-json).
- ``after_dbt``: which audiences a ``dbt run`` or ``dbt build`` refreshed, from
  ``target/run_results.json`` (``results[].unique_id`` and ``status``: success, error, skipped...;
  https://docs.getdbt.com/reference/artifacts/run-results-json).
- ``exposures_yaml``: one dbt exposure per audience and destination
  (https://docs.getdbt.com/docs/build/exposures), so ``dbt docs`` shows where each model is sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from audiencesync.sync.config import Config
from audiencesync.sync.errors import SourceError

_CACHE: dict[tuple[Path, float], dict[str, Any]] = {}
# Statuses of a model that built: dbt run writes "success"; dbt build on a model also "success".
SUCCEEDED = frozenset({"success"})


def _load(path: Path, what: str) -> dict[str, Any]:
    try:
        key = (path.resolve(), path.stat().st_mtime)
    except OSError:
        raise SourceError(str(path), f"no dbt {what} here (run dbt first, or check the path)") from None
    if key not in _CACHE:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SourceError(str(path), f"not a readable dbt {what}: {exc}") from None
        if not isinstance(data, dict):
            raise SourceError(str(path), f"not a dbt {what} (expected a JSON object)")
        _CACHE.clear()
        _CACHE[key] = data
    return _CACHE[key]


def _models(manifest: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    nodes = manifest.get("nodes")
    if not isinstance(nodes, dict):
        return {}
    return {
        uid: node
        for uid, node in nodes.items()
        if isinstance(node, dict) and node.get("resource_type") == "model"
    }


def find_model(manifest_path: Path | None, model: str) -> tuple[str, Mapping[str, Any]]:
    """The manifest's ``(unique_id, node)`` for ``model``: a model name or a full unique_id."""
    if manifest_path is None:
        raise SourceError(
            "source.dbt_manifest", "an audience names a dbt model: set dbt_project_dir or dbt_manifest"
        )
    models = _models(_load(manifest_path, "manifest"))
    if model in models:
        return model, models[model]
    found = [(uid, n) for uid, n in models.items() if n.get("name") == model]
    if not found:
        raise SourceError(str(manifest_path), f"no dbt model named {model!r} in the manifest")
    if len(found) > 1:
        ids = ", ".join(sorted(uid for uid, _ in found))
        raise SourceError(str(manifest_path), f"model {model!r} is ambiguous ({ids}); name its unique_id")
    return found[0]


def model_relation(manifest_path: Path | None, model: str) -> list[str]:
    """``[database, schema, alias]`` of ``model`` (``database`` left out when the manifest has none)."""
    _, node = find_model(manifest_path, model)
    alias = node.get("alias") or node.get("name")
    parts = [node.get("database"), node.get("schema"), alias]
    return [str(p) for p in parts if p]


@dataclass(frozen=True)
class AfterDbt:
    """What a dbt run means for each audience: synced, or skipped with the reason."""

    sync: tuple[str, ...]
    skipped: Mapping[str, str]


def after_dbt(config: Config, run_results: Path) -> AfterDbt:
    """The audiences whose models succeeded in ``run_results``; every other audience is skipped,
    with the model's status (error, skipped...), "not in this run", or "not a dbt model"."""
    results = _load(run_results, "run_results.json").get("results")
    if not isinstance(results, list):
        raise SourceError(str(run_results), "not a dbt run_results.json (no results list)")
    status = {str(r.get("unique_id")): str(r.get("status")) for r in results if isinstance(r, dict)}
    manifest = config.source.sql.dbt_manifest if config.source.sql else None
    synced: list[str] = []
    skipped: dict[str, str] = {}
    for name, audience in config.audiences.items():
        if audience.model is None:
            skipped[name] = "not a dbt model"
            continue
        uid, _ = find_model(manifest, audience.model)
        outcome = status.get(uid)
        if outcome in SUCCEEDED:
            synced.append(name)
        else:
            skipped[name] = f"model {audience.model} " + (
                f"{outcome} in this run" if outcome else "not in this run"
            )
    return AfterDbt(tuple(synced), skipped)


def only_audiences(config: Config, names: tuple[str, ...]) -> Config:
    """``config`` with its syncs cut to those of ``names``."""
    return replace(config, syncs=tuple(s for s in config.syncs if s.audience in names))


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _ref(model: str) -> str:
    return "ref('" + model + "')"


def exposures_yaml(config: Config) -> str:
    """A dbt ``exposures:`` YAML file: one exposure per audience (with a ``model``) and destination.
    Strings are written as JSON strings, which YAML reads as double-quoted scalars."""
    lines = ["# Written by `audience-sync dbt exposures`; regenerate rather than edit.", "version: 2", ""]
    entries: list[str] = []
    for target in config.targets():
        audience, dest = target.audience, target.destination
        if audience.model is None:
            continue
        manifest = config.source.sql.dbt_manifest if config.source.sql else None
        _, node = find_model(manifest, audience.model)
        q = json.dumps
        description = audience.description or f"Audience {audience.name} synced to {dest.platform}"
        entries += [
            f"  - name: {_ident(f'audience_sync_{audience.name}_{dest.name}')}",
            f"    label: {q(f'{target.platform_audience_name} ({dest.platform}: {dest.name})')}",
            "    type: application",
            "    maturity: high",
            f"    description: {q(description)}",
            "    owner:",
            f"      name: {q('audience-sync')}",
            "    depends_on:",
            f"      - {q(_ref(str(node.get('name'))))}",
            "    meta:",
            f"      platform: {q(dest.platform)}",
            f"      destination: {q(dest.name)}",
            f"      audience: {q(audience.name)}",
            f"      mode: {q(target.sync.mode)}",
        ]
    if not entries:
        return "\n".join([*lines, "exposures: []", ""])
    return "\n".join([*lines, "exposures:", *entries, ""])
