"""Shared fixtures of the chart tests (helpers live in chart_tools.py)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from .chart_tools import StubServer


@pytest.fixture
def stub_server() -> Iterator[Callable[..., StubServer]]:
    servers: list[StubServer] = []

    def start(handler: Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]) -> StubServer:
        server = StubServer(handler).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
