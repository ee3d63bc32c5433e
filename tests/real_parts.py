"""Optional real parts (SQLAlchemy, DuckDB, the PostgreSQL driver) the SQL source's tests use."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest


def need(module: str) -> Any:
    """Import ``module``, skipping the test when it is missing, except under CI (``CI=true``), whose
    test extras install it: there a missing part fails rather than silently skips."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)
