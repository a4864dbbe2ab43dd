"""Command lines, environments and config strings for Flower processes (pure logic)."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from fedrec_app.core.errors import FedrecError
from fedrec_app.ops.flower import (
    FlwrCli,
    SuperLinkCommand,
    SuperNodeCommand,
    _parse_json,
    flower_env,
    format_config,
)


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_superlink_argv_is_tls_auth_database_no_uv(tmp_path: Path) -> None:
    cmd = SuperLinkCommand(
        host="0.0.0.0",
        port=18123,
        database=tmp_path / "s.db",
        ca_cert=Path("c/ca.crt"),
        server_cert=Path("c/server.pem"),
        server_key=Path("c/server.key"),
        log_file=tmp_path / "l.log",
    )
    argv = cmd.argv()
    assert Path(argv[0]).name == "flower-superlink"
    assert _flag(argv, "--ssl-ca-certfile") == str(Path("c/ca.crt").resolve())
    assert _flag(argv, "--ssl-certfile") == str(Path("c/server.pem").resolve())
    assert _flag(argv, "--ssl-keyfile") == str(Path("c/server.key").resolve())
    assert "--enable-supernode-auth" in argv
    assert "--disable-runtime-dependency-installation" in argv
    assert "--insecure" not in argv
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("0.0.0.0", "18123")
    assert _flag(argv, "--database") == str(tmp_path / "s.db")
    assert _flag(argv, "--log-file") == str(tmp_path / "l.log")
    assert cmd.health_url == "https://127.0.0.1:18123/health"


def test_tls_is_required_unless_insecure_is_explicit(tmp_path: Path, caplog) -> None:
    with pytest.raises(FedrecError, match="TLS"):
        SuperLinkCommand(host="127.0.0.1", port=1, database=tmp_path / "s.db")
    with pytest.raises(FedrecError, match="TLS"):
        SuperNodeCommand(superlink="127.0.0.1:1", runtime_port=2)
    with caplog.at_level(logging.WARNING):
        link = SuperLinkCommand(host="127.0.0.1", port=1, database=tmp_path / "s.db", insecure=True)
        node = SuperNodeCommand(
            superlink="127.0.0.1:1", runtime_port=2, insecure=True, allow_any_app=True
        )
    assert caplog.text.count("WITHOUT TLS") == 2
    assert "--insecure" in link.argv() and "--enable-supernode-auth" not in link.argv()
    assert "--insecure" in node.argv() and "--root-certificates" not in node.argv()


def test_supernode_argv(tmp_path: Path) -> None:
    cmd = SuperNodeCommand(
        superlink="10.77.0.1:9000",
        runtime_port=19094,
        ca_cert=Path("ca.crt"),
        private_key=tmp_path / "sn1",
        max_wait_time=90,
        node_config={"data-path": tmp_path / "my data" / "p0", "gpu": -1, "tag": "a b"},
        approved_apps=Path("approved.txt"),
    )
    argv = cmd.argv()
    assert _flag(argv, "--superlink") == "10.77.0.1:9000"
    assert _flag(argv, "--root-certificates") == str(Path("ca.crt").resolve())
    assert _flag(argv, "--auth-supernode-private-key") == str(tmp_path / "sn1")
    assert (_flag(argv, "--host"), _flag(argv, "--port")) == ("127.0.0.1", "19094")
    assert _flag(argv, "--max-wait-time") == "90"
    assert _flag(argv, "--node-config") == (
        f"data-path='{tmp_path / 'my data' / 'p0'}' gpu=-1 tag='a b'"
    )
    assert _flag(argv, "--approved-apps") == str(Path("approved.txt").resolve())
    assert argv.index("--approved-apps") < argv.index("--superlink")  # ours, before Flower's


def test_supernode_needs_an_allowlist_or_an_explicit_allow_any_app(tmp_path: Path, caplog) -> None:
    tls = {"superlink": "127.0.0.1:1", "runtime_port": 2, "ca_cert": Path("ca.crt")}
    with pytest.raises(FedrecError, match="exactly one of approved_apps"):
        SuperNodeCommand(**tls)
    with pytest.raises(FedrecError, match="exactly one of approved_apps"):
        SuperNodeCommand(**tls, approved_apps=tmp_path / "a.txt", allow_any_app=True)
    with pytest.raises(FedrecError, match="cannot check app hashes"):
        SuperNodeCommand(**tls, approved_apps=tmp_path / "a.txt", quick_poll=False)
    with caplog.at_level(logging.WARNING):
        any_app = SuperNodeCommand(**tls, allow_any_app=True)
    assert "runs ANY app" in caplog.text
    assert "--allow-any-app" in any_app.argv() and "--approved-apps" not in any_app.argv()
    plain = SuperNodeCommand(**tls, allow_any_app=True, quick_poll=False).argv()
    assert "--allow-any-app" not in plain  # flower-supernode does not know it


def test_format_config_parses_back_with_flowers_parser(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    config = {
        "data-path": tmp_path / 'we"ird dir' / "x",
        "rounds": 3,
        "lr": 0.05,
        "share": True,
        "name": "C:\\path\\n",
    }
    parsed = parse_config_args([format_config(config)])
    assert parsed == {
        "data-path": str(tmp_path / 'we"ird dir' / "x"),
        "rounds": 3,
        "lr": 0.05,
        "share": True,
        "name": "C:\\path\\n",
    }


@pytest.mark.parametrize("bad", [{"k": "it's"}, {"k": "a\nb"}, {"bad key": 1}, {"k": float("nan")}])
def test_format_config_rejects_what_flower_would_misparse(bad: dict) -> None:
    with pytest.raises(FedrecError):
        format_config(bad)


def test_flower_env_and_cli_config(tmp_path: Path) -> None:
    env = flower_env(tmp_path / "home", base={"PATH": "/usr/bin"})
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1" and env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_HOME"] == str(tmp_path / "home")
    assert env["PATH"].endswith("/usr/bin")
    cli = FlwrCli(tmp_path / "cli", connection="fed")
    cli.configure("127.0.0.1:9999", Path("rel/ca.crt"))
    config = tomllib.loads(cli.config_path.read_text())
    assert config["superlink"]["default"] == "fed"
    assert config["superlink"]["fed"] == {
        "address": "127.0.0.1:9999",
        "root-certificates": str(Path("rel/ca.crt").resolve()),
    }
    with pytest.raises(FedrecError):
        cli.configure("127.0.0.1:9999", None)
    with pytest.raises(FedrecError):
        FlwrCli(tmp_path, connection="a.b")


def test_parse_json_skips_noise() -> None:
    text = 'Heads up {not json\n{\n  "success": false,\n  "error-message": "x"\n}\n'
    assert _parse_json(text) == {"success": False, "error-message": "x"}
    assert _parse_json("no json here") is None
