"""Identifiers that must be resent unhashed, kept so the state file alone does not reveal them.

Google takes the country code and postal code of an address unhashed, and Meta its MADID and
EXTERN_ID; a remove must send back exactly what the add sent, so state keeps them. They are kept
sealed with AES-GCM under a key that is not in the state file: ``$AUDIENCE_SYNC_STATE_KEY`` when it
is set (any passphrase; its SHA-256 is the key), else a random key in a file beside the state file
(``<state file>.key``, mode 0600), created on first use. A sealed value reads
``sealed:v1:<hex(nonce + ciphertext)>``; everything else in a payload is a SHA-256 hash.

Payload fingerprints are taken of the unsealed payload, so sealing changes no diff.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

from audiencesync.state.db import StateFileError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "AUDIENCE_SYNC_STATE_KEY"
PREFIX = "sealed:v1:"
SEALED_KEYS = frozenset({"zip", "country", "madid", "extern_id"})
"""Payload keys that can hold an unhashed value on some platform; their values are always sealed."""


class SealError(StateFileError):
    """A sealed value cannot be opened: the key is not the one it was sealed with."""


class Sealer:
    """Seals and opens payload values. The key is read (or the key file created) on first use, so
    a state that never holds an unhashed value never needs one."""

    def __init__(self, key: Callable[[], bytes], where: str) -> None:
        self._key = key
        self._box: AESGCM | None = None
        self.where = where
        self._prefix = secrets.token_bytes(8)
        self._count = 0

    @property
    def _aead(self) -> AESGCM:
        if self._box is None:
            self._box = AESGCM(self._key())
        return self._box

    def seal(self, value: str) -> str:
        if value.startswith(PREFIX):
            return value
        # A GCM nonce must never repeat under one key: 8 random bytes per sealer and a 4-byte
        # counter (a fresh random prefix every 2**32 seals), cheaper than 12 random bytes a value.
        self._count += 1
        if self._count >= 1 << 32:
            self._prefix, self._count = secrets.token_bytes(8), 0
        nonce = self._prefix + self._count.to_bytes(4, "big")
        return PREFIX + (nonce + self._aead.encrypt(nonce, value.encode(), None)).hex()

    def open(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value
        try:
            box = bytes.fromhex(value[len(PREFIX) :])
            return self._aead.decrypt(box[:12], box[12:], None).decode()
        except (InvalidTag, ValueError):
            raise SealError(
                f"state key ({self.where}) does not open the identifiers sealed in state or in the plan: "
                f"set {KEY_ENV} or restore the key file they were sealed with"
            ) from None

    def seal_payload(self, identifiers: Mapping[str, str]) -> dict[str, str]:
        return {k: self.seal(v) if k in SEALED_KEYS else v for k, v in identifiers.items()}

    def open_payload(self, payload: Mapping[str, str]) -> dict[str, str]:
        return {k: self.open(v) if k in SEALED_KEYS else v for k, v in payload.items()}

    def open_json(self, payload: str) -> str:
        """A payload's JSON text with its sealed values opened, keys sorted as the planner writes them."""
        if PREFIX not in payload:
            return payload
        opened = self.open_payload(json.loads(payload))
        return json.dumps(opened, sort_keys=True, separators=(",", ":"))


_CACHE: dict[str, Sealer] = {}
_MEMORY_KEY = secrets.token_bytes(32)
_BOUND: dict[int, Path] = {}
"""In-memory states (dry runs) that seal with a state file's key, so a saved plan applies to it."""


def bind_key_file(conn: sqlite3.Connection, state_path: Path | None) -> None:
    """Let the in-memory state ``conn`` seal with ``state_path``'s key (None: unbind)."""
    if state_path is None:
        _BOUND.pop(id(conn), None)
    else:
        _BOUND[id(conn)] = state_path


def key_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".key")


_PROBE = "audience-sync state key"


def write_probe(conn: sqlite3.Connection) -> None:
    """Seal a known text into the state file, so a later wrong key is caught (in-memory: none)."""
    if _file_of(conn):
        conn.execute(
            "INSERT OR REPLACE INTO sealing (id, probe) VALUES (1, ?)", [sealer_for(conn).seal(_PROBE)]
        )


def _file_of(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row and row[2] else ""


def _check_probe(conn: sqlite3.Connection, sealer: Sealer) -> None:
    try:
        row = conn.execute("SELECT probe FROM sealing WHERE id = 1").fetchone()
    except sqlite3.OperationalError:  # before migration 4
        return
    if row is not None and sealer.open(str(row[0])) != _PROBE:
        raise SealError(f"state key ({sealer.where}) is not the key of this state file")


def sealer_for(conn: sqlite3.Connection) -> Sealer:
    """The sealer for the state file ``conn`` has open (an in-memory state gets this process's key).
    Raises ``SealError`` when the key is not the one the state file was sealed with."""
    file = _file_of(conn)
    own_file = bool(file)
    if not file and id(conn) in _BOUND:
        file = str(_BOUND[id(conn)])
    passphrase = os.environ.get(KEY_ENV, "").strip()
    cache_key = f"{file}\0{passphrase}"
    if cache_key not in _CACHE:
        if passphrase:
            digest = hashlib.sha256(passphrase.encode()).digest()
            _CACHE[cache_key] = Sealer(lambda: digest, f"${KEY_ENV}")
        elif not file:
            _CACHE[cache_key] = Sealer(lambda: _MEMORY_KEY, "this process")
        else:
            path = key_path(Path(file))
            _CACHE[cache_key] = Sealer(lambda: _read_or_create(path), str(path))
        if own_file:
            try:
                _check_probe(conn, _CACHE[cache_key])
            except SealError:
                del _CACHE[cache_key]
                raise
    return _CACHE[cache_key]


def _read_or_create(path: Path) -> bytes:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    # Written aside and linked into place: a crash or a full disk never leaves a half-written key,
    # and of two processes creating it at once, one wins and both use its key.
    key = secrets.token_bytes(32)
    aside = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.urlsafe_b64encode(key) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return _read_key(path)
    except OSError as exc:
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        raise StateFileError(f"state key file {path}: cannot create it ({why})") from None
    finally:
        aside.unlink(missing_ok=True)
    return key


def _read_key(path: Path) -> bytes:
    try:
        key = base64.urlsafe_b64decode(path.read_bytes().strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SealError(f"state key file {path}: not a key written by audience-sync")
    return key
