"""``audience-sync demo``: a whole sync on the embedded default, with no credentials.

It builds the synthetic profile database the config names (if missing), prints the dry-run plan,
starts the platform emulators the config's loopback endpoints name, pushes for real, and shows what
each emulator now holds. Destinations that are neither emulated nor files are left out: the demo
never reaches a real ad account.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import requests
from audiencesync.connectors.contract import DestinationConfig
from audiencesync.connectors.registry import PLATFORMS
from audiencesync.state.store import StateStore
from audiencesync.sync.cli.report import render_results
from audiencesync.sync.config import Config, load_config
from audiencesync.sync.demo.emulation import emulators_for, running_emulators
from audiencesync.sync.demo.profiles import build_profiles
from audiencesync.sync.runner import RunOptions, SyncRunner, TargetResult
from rich.console import Console
from rich.table import Table


def _needs_account(dest: DestinationConfig) -> bool:
    return PLATFORMS[dest.platform].needs_account


def demo_targets(config: Config) -> list[str]:
    return [t.key for t in config.targets() if t.destination.is_emulated or not _needs_account(t.destination)]


def run_demo(config_path: Path, *, profiles: int | None, seed: int, push: bool, console: Console) -> int:
    config = load_config(config_path)
    db = config.source.path
    if config.source.kind != "sqlite":
        console.print("[red]the demo needs a sqlite source[/red]")
        return 2
    # Before anything is built or written: a port taken by another program ends the demo here.
    running = running_emulators(config) if push else {}
    if profiles is not None or not db.exists():
        started = time.perf_counter()
        count = build_profiles(db, profiles or 10_000, seed)
        console.print(f"built {db} with {count:,} synthetic profiles in {time.perf_counter() - started:.1f}s")
    else:
        console.print(f"using {db} (pass --profiles N to rebuild it)")

    keys = demo_targets(config)
    results: list[TargetResult] = []
    store = StateStore.open(config.state_path)
    try:
        dry = _run(config, store, keys, dry_run=True)
        render_results(console, dry, dry_run=True)
        if not push:
            return 0
        # Emulators the demo starts begin empty, so what state remembers about their audiences is
        # stale; ones already running (`audience-sync emulator all`) hold what state says.
        own = [k for k in keys if _emulated_by_demo(config, k, running)]
        for key in own:
            store.forget_target(key)
        with emulators_for(config, reuse=True) as emulators:
            console.print(
                "emulators: "
                + ", ".join(
                    f"{name} on 127.0.0.1:{em.port}" + (" (already running)" if name in running else "")
                    for name, em in emulators.items()
                )
            )
            results = _run(config, store, keys, dry_run=False)
            render_results(console, results, dry_run=False)
            _show_emulators(console, emulators)
        # The demo's own emulators are gone now, and their audiences with them: state must not point
        # at them, or the next sync would find every audience gone.
        for key in own:
            store.forget_target(key)
    finally:
        store.close()
    if push and any(_emulated_by_demo(config, k, running) for k in keys):
        console.print(
            f"\nThe demo's emulators stopped with it. To go on, run [bold]audience-sync emulator all "
            f"--config {config_path}[/bold] in another terminal, then [bold]audience-sync demo[/bold] "
            "again: it uses the running emulators, and the next steps find them."
        )
    console.print(
        "\nNext: [bold]audience-sync demo advance[/bold] moves some profiles between stages and flows; "
        f"then [bold]audience-sync sync --dry-run --config {config_path}[/bold] shows exactly those changes, "
        f"[bold]audience-sync sync --config {config_path}[/bold] pushes them and "
        f"[bold]audience-sync lag --config {config_path}[/bold] shows how long they took."
    )
    return 0 if all(r.status in ("ok", "planned") for r in results) else 1


def _emulated_by_demo(config: Config, key: str, running: dict[str, Any]) -> bool:
    dest = config.targets(key)[0].destination
    return dest.is_emulated and _needs_account(dest) and dest.name not in running


def _run(config: Config, store: StateStore, keys: list[str], dry_run: bool) -> list[TargetResult]:
    options = RunOptions(dry_run=dry_run, targets=tuple(keys), trigger="demo")
    return SyncRunner(config, store, options).run()


def _show_emulators(console: Console, emulators: dict[str, Any]) -> None:
    table = Table(title="What the emulators hold now", title_justify="left")
    table.add_column("destination")
    table.add_column("platform audience")
    table.add_column("members", justify="right")
    seen: set[int] = set()
    for name, emulator in emulators.items():
        if id(emulator) in seen:
            continue
        seen.add(id(emulator))
        if emulator.admin_url is None:
            continue  # a Google emulator started elsewhere: its admin port is its own
        try:
            state = requests.get(f"{emulator.admin_url}/_emulator/state", timeout=10).json()
        except (requests.RequestException, ValueError):
            continue
        for audience in state.get("audiences", []):
            table.add_row(
                name,
                f"{audience.get('name')} ({audience.get('id')})",
                f"{len(audience.get('members', [])):,}",
            )
    console.print(table)
