"""The HTTP API: open health and metrics, bearer token on /api when configured."""

from __future__ import annotations

import asyncio

import aiohttp
from pydantic import SecretStr

from daemon.adapters.http_api import HttpApi
from daemon.config import HttpSettings
from daemon.metrics import Metrics


async def _statuses(token: str | None, headers: dict[str, str]) -> dict[str, int]:
    settings = HttpSettings(port=0, token=SecretStr(token) if token else None)
    api = HttpApi(settings, Metrics(), lambda: {"broker": False, "store": True})
    await api.start()
    try:
        base = f"http://127.0.0.1:{api.bound_port}"
        out = {}
        async with aiohttp.ClientSession(headers=headers) as session:
            for path in ("/healthz", "/readyz", "/metrics", "/api/v1/alerts"):
                async with session.get(base + path) as response:
                    out[path] = response.status
        return out
    finally:
        await api.stop()


def test_api_needs_the_token_when_configured() -> None:
    """Test that /api answers 401 without the token, and health/metrics stay open."""
    statuses = asyncio.run(_statuses("s3cret", {}))
    assert statuses == {"/healthz": 200, "/readyz": 503, "/metrics": 200, "/api/v1/alerts": 401}


def test_api_accepts_the_right_token() -> None:
    """Test that the bearer token opens /api and a wrong one does not."""
    good = asyncio.run(_statuses("s3cret", {"Authorization": "Bearer s3cret"}))
    bad = asyncio.run(_statuses("s3cret", {"Authorization": "Bearer nope"}))
    assert good["/api/v1/alerts"] == 200
    assert bad["/api/v1/alerts"] == 401


def test_api_is_open_without_a_token() -> None:
    """Test that without `http.token` the API is reachable (local development)."""
    assert asyncio.run(_statuses(None, {}))["/api/v1/alerts"] == 200
