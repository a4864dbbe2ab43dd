"""Safe reloads: a new checkpoint is swapped in under load, a corrupt one is refused."""

from __future__ import annotations

import os
import signal
import threading

from gateway.conftest import reloads
from launch_helpers import wait_for

from fedrec_app.core.checkpoint import point


def test_reload_under_load(checkpoint_factory, gateway_factory, tmp_path) -> None:
    run = tmp_path / "run-1"
    point(run, "latest", checkpoint_factory(run / "round-0001", round_=1, seed=1))
    gw = gateway_factory(run / "latest", "--watch", "--watch-interval", "0.2")
    stop = threading.Event()
    failures: list[str] = []
    answered = [0]

    def hammer(offset: int) -> None:
        with gw.client() as client:
            while not stop.is_set():
                user_id = 1 + (answered[0] + offset) % 25
                try:
                    response = client.get("/recommend", params={"user_id": user_id, "n": 10})
                    if response.status_code != 200 or len(response.json()["recommendations"]) == 0:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                except Exception as exc:  # any transport error is a failed request
                    failures.append(repr(exc))
                answered[0] += 1

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        with gw.client() as client:
            # a new valid checkpoint: picked up by the watcher
            point(run, "latest", checkpoint_factory(run / "round-0002", round_=2, seed=2))
            wait_for(lambda: client.get("/readyz").json()["round"] == 2)
            # a corrupt one: refused, the old one keeps serving
            corrupt = checkpoint_factory(run / "round-0003", round_=3, seed=3)
            weights = corrupt / "weights.npz"
            data = bytearray(weights.read_bytes())
            data[len(data) // 2] ^= 0xFF
            weights.write_bytes(bytes(data))
            point(run, "latest", corrupt)
            wait_for(lambda: reloads(client, "refused") >= 1)
            before = answered[0]
            wait_for(lambda: answered[0] > before + 20)  # still serving after the refusal
            assert client.get("/readyz").json()["round"] == 2
            assert reloads(client, "ok") == 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert answered[0] > 50
    log = gw.log_text()
    assert "reload refused" in log and "weights.npz" in log and "sha256" in log


def test_sighup_forces_a_reload(checkpoint_factory, gateway_factory, tmp_path) -> None:
    folder = checkpoint_factory(tmp_path / "final", round_=1)
    gw = gateway_factory(folder)
    checkpoint_factory(folder, round_=5, seed=9)  # replaced in place (atomic rename)
    with gw.client() as client:
        assert client.get("/readyz").json()["round"] == 1  # no --watch: nothing changes by itself
        os.kill(gw.process.pid, signal.SIGHUP)
        wait_for(lambda: client.get("/readyz").json()["round"] == 5)
        assert gw.process.poll() is None
