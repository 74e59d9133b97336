"""Every adapter test runs on both transports (docs/design/0005): grpc.aio and h2."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from saar.settings import Settings, Transport, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[Transport.GRPCIO, Transport.H2], ids=["grpcio", "h2"])
def transport(request: pytest.FixtureRequest) -> Transport:
    """The transport that serves Envoy's streams in this test."""
    value: Transport = request.param
    return value


@pytest.fixture
def settings(transport: Transport) -> Settings:
    """The local config, served on ``transport``."""
    loaded = load_settings(ROOT / "config" / "local.yaml")
    return replace(loaded, server=replace(loaded.server, transport=transport))
