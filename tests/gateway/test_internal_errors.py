"""An unexpected exception becomes a JSON 500 without a stack trace, and is logged."""

from __future__ import annotations

import asyncio
import logging

import httpx
from signing_keys import verify_key_file

from fedrec_app.gateway.main import create_app
from fedrec_app.gateway.recommender import Recommender
from fedrec_app.gateway.settings import GatewaySettings


def test_unexpected_error_is_a_json_500(checkpoint_dir, monkeypatch, caplog) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Recommender, "search", broken)
    app = create_app(GatewaySettings(checkpoint=checkpoint_dir, verify_key=verify_key_file()))

    async def requests() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get("/movies", params={"q": "x"}), await client.get("/healthz")

    with caplog.at_level(logging.INFO):
        failed, health = asyncio.run(requests())
    assert failed.status_code == 500
    assert failed.json() == {"detail": "internal server error"}
    assert "secret" not in failed.text and "Traceback" not in failed.text
    assert health.status_code == 200  # still serving
    assert "secret internal detail" in caplog.text  # the operator sees it in the log
    assert any('"GET /movies" 500' in r.getMessage() for r in caplog.records)
