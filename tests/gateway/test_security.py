"""API keys, HTTPS with certificates from `fedrec certs`, CORS, CLI refusals."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from signing_keys import verify_key_file

from fedrec_app.core.errors import FedrecError
from fedrec_app.gateway.security import key_matches, load_api_keys

KEY = "k3y-for-tests-0123456789abcdef"


def test_key_matching_and_key_file(tmp_path) -> None:
    keys = frozenset({KEY, "another-key-0123456789"})
    assert key_matches(KEY, keys) and not key_matches(KEY[:-1], keys)
    assert not key_matches("", keys) and not key_matches("ünïcode", keys)
    path = tmp_path / "keys"
    path.write_text(f"# gateway keys\n\n{KEY}\n")
    assert load_api_keys(path) == frozenset({KEY})
    path.write_text("# nothing\n")
    with pytest.raises(FedrecError, match="no API keys"):
        load_api_keys(path)
    path.write_text("short\n")
    with pytest.raises(FedrecError, match="at least 16"):
        load_api_keys(path)


def test_api_keys_over_https(checkpoint_dir, gateway_factory, tmp_path) -> None:
    certs = tmp_path / "certs"
    made = subprocess.run(
        [sys.executable, "-m", "fedrec_app", "certs", "--out", str(certs)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / "keys"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    gw = gateway_factory(
        checkpoint_dir,
        "--api-key-file",
        str(key_file),
        "--tls",
        "--cert",
        str(certs / "server.pem"),
        "--key",
        str(certs / "server.key"),
        tls_ca=certs / "ca.crt",
    )
    assert gw.url.startswith("https://")
    with gw.client() as client:
        assert client.get("/healthz").status_code == 200  # open
        for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": KEY}):
            response = client.get("/recommend", params={"user_id": 4}, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert "API key" in response.json()["detail"]
        for path in ("/readyz", "/metrics", "/model", "/movies"):
            assert client.get(path).status_code == 401
        good = {"Authorization": f"Bearer {KEY}"}
        response = client.get("/recommend", params={"user_id": 4}, headers=good)
        assert response.status_code == 200 and len(response.json()["recommendations"]) == 5
        posted = client.post(
            "/predict", json={"pairs": [{"user_id": 4, "movie_id": 1}]}, headers=good
        )
        assert posted.status_code == 200
    # the certificate is checked: a client without the CA refuses the server
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{gw.url}/healthz", timeout=5)


def test_cors_is_off_by_default_and_opt_in(checkpoint_dir, gateway_factory) -> None:
    origin = "http://lab.example:3000"
    gw = gateway_factory(checkpoint_dir, "--cors-origin", origin)
    with gw.client() as client:
        allowed = client.get("/readyz", headers={"Origin": origin})
        assert allowed.headers["access-control-allow-origin"] == origin
        other = client.get("/readyz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--checkpoint", "{tmp}/nowhere"], "nowhere"),
        (["--checkpoint", "{ckpt}", "--tls", "--cert", "{tmp}/none.pem"], "none.pem"),
        (["--checkpoint", "{ckpt}", "--api-key-file", "{tmp}/nokeys"], "nokeys"),
        (["--checkpoint", "{ckpt}", "--min-rating", "7"], "--min-rating"),
        (["--checkpoint", "{ckpt}", "--header-timeout", "-1"], "--header-timeout"),
        (["--checkpoint", "{ckpt}", "--max-connections-per-client", "-5"], "per-client"),
    ],
)
def test_cli_refuses_bad_arguments(checkpoint_dir, tmp_path, args, message) -> None:
    args = [a.format(tmp=tmp_path, ckpt=checkpoint_dir) for a in args]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app",
            "gateway",
            "--port",
            "1",
            "--verify-key",
            str(verify_key_file()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_api_docs_are_closed_with_keys_unless_opened(
    checkpoint_dir, gateway_factory, tmp_path
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    docs = ("/docs", "/docs-assets/swagger-ui-bundle.js", "/openapi.json")
    closed = gateway_factory(checkpoint_dir, "--api-key-file", str(key_file))
    opened = gateway_factory(checkpoint_dir, "--api-key-file", str(key_file), "--open-docs")
    keyless = gateway_factory(checkpoint_dir)
    good = {"Authorization": f"Bearer {KEY}"}
    with closed.client() as client:
        for path in docs:  # not there at all: not even with the key
            assert client.get(path).status_code == 404, path
            assert client.get(path, headers=good).status_code == 404, path
        assert client.get("/recommend", params={"user_id": 4}, headers=good).status_code == 200
        page = client.get("/").text  # the page links no docs that would answer 404
        assert 'href="/docs"' not in page and 'href="/openapi.json"' not in page
        assert 'href="/readyz"' in page
    for gw in (opened, keyless):
        with gw.client() as client:
            for path in docs:
                assert client.get(path).status_code == 200, path
            schema = client.get("/openapi.json").json()
            assert "/recommend" in schema["paths"]
            assert 'href="/docs"' in client.get("/").text
    with opened.client() as client:  # opening the docs opens nothing else
        assert client.get("/recommend", params={"user_id": 4}).status_code == 401
