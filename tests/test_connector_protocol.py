"""Every platform's connector has every method of the ``Connector`` protocol: the engine calls them
directly, never discovering one by name."""

from __future__ import annotations

import importlib
import inspect

import pytest
from audiencesync.connectors.contract import Connector
from audiencesync.connectors.registry import PLATFORMS

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(Connector).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


def test_the_protocol_names_every_method_the_engine_calls() -> None:
    assert PROTOCOL_METHODS == [
        "add",
        "capabilities",
        "close",
        "ensure_audience",
        "follow",
        "read_back",
        "refresh_due_seconds",
        "remove",
    ]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_each_connector_implements_the_whole_protocol(platform: str) -> None:
    module, name = PLATFORMS[platform].connector.split(":")
    connector_class = getattr(importlib.import_module(module), name)
    for method in PROTOCOL_METHODS:
        implemented = inspect.getattr_static(connector_class, method, None)
        assert inspect.isfunction(implemented), f"{name} has no {method}()"
        expected = list(inspect.signature(getattr(Connector, method)).parameters)
        assert list(inspect.signature(implemented).parameters) == expected, f"{name}.{method}"
