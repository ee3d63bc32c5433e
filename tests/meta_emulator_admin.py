"""The Meta emulator's admin surface, as the tests that run the CLI against it drive it."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from audiencesync.connectors.meta.emulator import MetaEmulator


def set_faults(emulator: MetaEmulator, **faults: Any) -> None:
    """Turn the emulator's fault switches (``/_emulator/faults``)."""
    request = urllib.request.Request(
        f"{emulator.admin_url}/_emulator/faults",
        data=json.dumps(faults).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
