"""A throwaway PostgreSQL server for the tests: Debian's ``initdb``/``pg_ctl`` in a temporary
directory, on a free loopback port, trusting local connections. Run as a non-root user when the
tests run as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``initdb``, else ``initdb`` on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server(bindir: Path) -> Iterator[str]:
    """Start a server and yield its SQLAlchemy URL (database ``postgres``, user ``postgres``)."""
    root = Path(tempfile.mkdtemp(prefix="audience-sync-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL will not run as root: the cluster belongs to nobody.
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(root, "nobody")
        os.chmod(root, 0o700)
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
