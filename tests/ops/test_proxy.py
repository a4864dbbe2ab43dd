"""The Fleet proxy's configuration (fedrec_app/ops/proxy.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedrec_app.ops.certs import make_certs
from fedrec_app.ops.federation import free_port
from fedrec_app.ops.proxy import FLEET_PATHS, ProxyCommand, nginx_bin


def test_fleet_paths_are_flowers_fleet_routes() -> None:
    """The proxy forwards exactly the Fleet routes of this Flower: a new one fails here."""
    from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

    fleet = sorted(p for method, p in PROTOBUF_REQUEST_TYPES if p.startswith("/v1/fleet/"))
    assert sorted(FLEET_PATHS) == fleet
    assert all(method == "POST" for method, p in PROTOBUF_REQUEST_TYPES if p in fleet)


def _proxy(tmp_path: Path) -> ProxyCommand:
    certs = make_certs(tmp_path / "certs")
    return ProxyCommand(
        host="127.0.0.1",
        port=free_port(),
        upstream_port=free_port(),
        server_cert=certs.server_cert,
        server_key=certs.server_key,
        ca_cert=certs.ca_cert,
        folder=tmp_path / "proxy",
    )


def test_config_forwards_only_fleet_paths(tmp_path: Path) -> None:
    text = _proxy(tmp_path).config()
    forwarded = re.findall(
        r"location = (\S+) \{\s*limit_except POST \{ deny all; \}\s*"
        r"proxy_pass https://superlink;",
        text,
    )
    assert forwarded == list(FLEET_PATHS)
    assert text.count("proxy_pass") == len(FLEET_PATHS)
    assert re.search(r"location / \{\s*return 404;", text)
    assert "proxy_ssl_verify on;" in text


@pytest.mark.skipif(nginx_bin() is None, reason="nginx is not installed")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    proxy = _proxy(tmp_path)
    path = proxy.write()
    assert path.is_file()
    proxy.check()
