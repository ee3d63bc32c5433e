"""The ``file`` destination: hashed adds and removes written as CSV in each platform's manual-upload
format, for teams who upload customer lists by hand.

It is a real connector, not a test double: it goes through the same outbox, and a batch counts as
confirmed once its file is durably on disk (written to a temporary name, flushed, then renamed).
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from audiencesync.connectors import contract
from audiencesync.connectors.audience_lookup import find_or_create
from audiencesync.connectors.errors import FatalError
from audiencesync.connectors.file.settings import SETTINGS
from audiencesync.connectors.file.templates import HEADERS

FILE_ROWS = 50_000


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "audience"


class FileConnector:
    """Writes ``<directory>/<audience>/<time>-<add|remove>-<n>.csv``."""

    def __init__(self, dest: contract.DestinationConfig) -> None:
        self.dest = dest
        self.format = str(SETTINGS.value(dest.settings, "format"))
        self.directory = Path(str(dest.settings["directory"]))
        self._schemas: dict[str, tuple[str, ...]] = {}
        self._written = 0

    def capabilities(self) -> contract.Capabilities:
        return contract.Capabilities(max_batch=FILE_ROWS, identifier_kinds=frozenset(HEADERS[self.format]))

    def ensure_audience(self, spec: contract.AudienceSpec) -> str:
        """The audience's folder under ``directory``: the known one, else the one named after the
        audience, made when missing."""
        audience_id = find_or_create(
            spec,
            lookup=self._make_folder,
            find=lambda name: self._folder(_slug(name)),
            id_of=lambda folder: folder.name,
            create=lambda: self._make_folder(_slug(spec.name)).name,
        )
        self._schemas[audience_id] = spec.identifier_kinds
        return audience_id

    def _folder(self, audience_id: str) -> Path | None:
        folder = self.directory / audience_id
        return folder if folder.is_dir() else None

    def _make_folder(self, audience_id: str) -> Path:
        folder = self.directory / audience_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FatalError(
                f"destination {self.dest.name}: cannot create {folder}: {exc.strerror}"
            ) from None
        return folder

    def add(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        return self._write(audience_id, "add", batch)

    def remove(
        self, audience_id: str, batch: Sequence[contract.Change], session: contract.SessionInfo | None
    ) -> contract.PushResult:
        return self._write(audience_id, "remove", batch)

    def follow(self, audience_id: str, handles: Sequence[str]) -> Mapping[str, contract.HandleStatus]:
        return {h: contract.HandleStatus("confirmed") for h in handles}

    def read_back(self, audience_id: str) -> contract.PlatformStatus:
        folder = self.directory / audience_id
        files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
        updated = files[-1].stat().st_mtime if files else None
        return contract.PlatformStatus(state=f"{len(files)} file(s) written", ready=True, updated_at=updated)

    def refresh_due_seconds(self) -> float | None:
        """Files do not expire: nothing is ever re-sent for age."""
        return None

    def close(self) -> None:
        """Every file is closed once written: nothing is held open."""

    def _write(self, audience_id: str, op: str, batch: Sequence[contract.Change]) -> contract.PushResult:
        keys = self._schemas.get(audience_id) or tuple(HEADERS[self.format])
        headers = HEADERS[self.format]
        columns = [k for k in keys if k in headers]
        self._written += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.directory / audience_id / f"{stamp}-{op}-{os.getpid()}-{self._written:05d}.csv"
        tmp = path.with_suffix(".csv.tmp")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow([headers[k] for k in columns])
                writer.writerows([c.identifiers.get(k, "") for k in columns] for c in batch)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise FatalError(
                f"destination {self.dest.name}: cannot write {path.name}: {exc.strerror}"
            ) from None
        return contract.PushResult.all_confirmed(batch)
