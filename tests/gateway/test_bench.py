"""`fedrec bench gateway` parts: the load generator over real HTTP, the report files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fedrec_app.bench.gateway import markdown, write_results


def test_load_generator_counts_answers_and_failures(gateway, tmp_path) -> None:
    port = gateway.url.rsplit(":", 1)[1]
    paths = tmp_path / "paths.txt"
    paths.write_text("/recommend?user_id=999\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app.bench.loadgen",
            "--port",
            port,
            "--concurrency",
            "4",
            "--requests",
            "120",
            "--duration",
            "30",
            "--paths-file",
            str(paths),
            "/recommend?user_id=4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["requests"] == 120
    assert summary["failed"] == 60  # every other request is an unknown user (404)
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]


def test_process_cpu_seconds_grows() -> None:
    import os
    import time

    from fedrec_app.bench.gateway import process_cpu_seconds

    before = process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert process_cpu_seconds(os.getpid()) > before


def test_load_generator_refuses_other_hosts() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app.bench.loadgen",
            "--host",
            "example.org",
            "--port",
            "80",
            "--requests",
            "1",
            "/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0 and "loopback" in result.stderr


def test_report_files(tmp_path) -> None:
    def level(c: int, rps: float, cpu_ms: float) -> dict:
        return {
            "concurrency": c,
            "requests": 10,
            "failed": 0,
            "seconds": 1.0,
            "rps": rps,
            "p50_ms": 1.0,
            "p99_ms": 2.0,
            "server_cpu_ms_per_request": cpu_ms,
        }

    result = {
        "checkpoint": "synthetic (ML-100k size)",
        "num_users": 943,
        "num_items": 1682,
        "machine": {"cpus": 2, "load_average_1m": [1.0, 1.5]},
        "config": {"n": 10},
        "results": [
            {
                "concurrency": 16,
                "gateway": level(16, 2000.0, 0.5),
                "reference": level(16, 10.0, 90.0),
                "speedup": 200.0,
            },
        ],
    }
    md_path = write_results(result, tmp_path / "out" / "gateway.json")
    assert json.loads((tmp_path / "out" / "gateway.json").read_text()) == result
    table = md_path.read_text()
    assert table == markdown(result)
    assert "load average 1.0 → 1.5" in table
    assert "| 16 | 2,000 | 1.0 / 2.0 | 10.0 | 1.0 / 2.0 | 200.0x | 0.5 / 90.0 | 0 / 0 |" in table


@pytest.mark.parametrize("value", ["1,x", "0,16", ""])
def test_cli_refuses_bad_concurrency(value) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fedrec_app", "bench", "gateway", "--concurrency", value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "--concurrency" in result.stderr


def test_load_generator_sends_from_another_loopback_address(gateway, tmp_path) -> None:
    port = gateway.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app.bench.loadgen",
            "--port",
            port,
            "--concurrency",
            "2",
            "--requests",
            "40",
            "--duration",
            "30",
            "--source",
            "127.0.0.2",
            "/recommend?user_id=4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(result.stdout)
    assert summary["sent"] == summary["ok"] == summary["requests"] == 40
    assert "127.0.0.2" in gateway.log_text()  # the access log names the client address
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app.bench.loadgen",
            "--port",
            port,
            "--requests",
            "1",
            "--source",
            "10.0.0.1",
            "/",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0 and "loopback" in refused.stderr


def test_flood_bench_end_to_end(tmp_path) -> None:
    """A small `fedrec bench gateway --flood`: the other clients are all served."""
    json_path = tmp_path / "flood.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedrec_app",
            "bench",
            "gateway",
            "--flood",
            "150",
            "--flood-clients",
            "2",
            "--duration",
            "1.5",
            "--requests",
            "300",
            "--defaults-only",
            "--json",
            str(json_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(json_path.read_text())
    (row,) = report["results"]
    assert row["gateway"] == "default limits"
    for phase in ("without_flood", "during_flood"):
        assert row[phase]["sent"] == row[phase]["ok"] > 0, row[phase]
    flood = row["flood"]
    assert flood["connects"] >= 150 and flood["closed_at_once"] > 0, flood
    during = row["during_flood"]["server_connections"]
    assert during["per_client"] >= 150 - 64 and during["open"] <= 64 + 1, during
    table = json_path.with_suffix(".md").read_text()
    assert "| default limits | yes |" in table and "100.00%" in table
    assert table in result.stdout


def test_flood_refuses_other_hosts() -> None:
    for args in (["--host", "example.org"], ["--source", "192.168.1.2"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedrec_app.bench.flood",
                "--port",
                "80",
                "--connections",
                "1",
                "--duration",
                "1",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and "loopback" in result.stderr
