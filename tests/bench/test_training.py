"""`fedrec bench training`'s pure parts: reading round times, the headline JSON, the table."""

from __future__ import annotations

from fedrec_app.bench.training import headline, noop_round_seconds, table


def _result() -> dict:
    def run(rounds: list[float], **extra: object) -> dict:
        return {"round_seconds": rounds, "mean_round_seconds": sum(rounds) / len(rounds), **extra}

    return {
        "nodes": 3,
        "rounds": 2,
        "split": "u1",
        "runs": {
            "noop": run([6.0, 4.0]),
            "in_process": run([20.0, 10.0], node_seconds=9.5),
            "warm": run([7.0, 5.5], node_seconds=1.25),
        },
        "clientapp_import_seconds": {"warm": 0.05, "in_process": 3.2},
    }


def test_noop_round_times_come_from_the_server_log() -> None:
    log = (
        "INFO :      [ROUND 1]\n[noopapp] round 1 seconds=6.67\n"
        "noise\n[noopapp] round 2 seconds=9.91\n[noopapp] 2 rounds in 16.58 s (8.29 s per round)\n"
    )
    assert noop_round_seconds(log) == [6.67, 9.91]
    assert noop_round_seconds("no rounds here") == []


def test_headline_is_seconds_per_round_of_the_three_runs() -> None:
    assert headline(_result()) == {"noop": 5.0, "in_process": 15.0, "warm": 6.25}


def test_table_gives_each_run_against_the_no_op() -> None:
    text = table(_result())
    assert "| noop | 5.00 | 1.00 | 6.0 4.0 | - |" in text
    assert "| in_process | 15.00 | 3.00 | 20.0 10.0 | 9.50 |" in text
    assert "| warm | 6.25 | 1.25 | 7.0 5.5 | 1.25 |" in text
    assert "(in_process): 3.20 s" in text


def test_the_fleet_proxys_cost_is_the_ratio_to_the_direct_runs() -> None:
    def run(mean: float) -> dict:
        return {"round_seconds": [mean], "mean_round_seconds": mean, "node_seconds": 1.0}

    result = _result()  # warm 6.25
    result["runs"].update(
        warm_direct=run(5.0), noop_direct=run(4.0), noop_again=run(5.0), warm_again=run(6.75)
    )
    figures = headline(result)
    assert figures["proxy_ratio"] == 1.3  # mean(6.25, 6.75) / 5.0
    assert figures["proxy_ratio_noop"] == 1.25  # 5.0 / 4.0
    text = table(result)
    assert "| warm_direct | 5.00 | 1.00 | 5.0 | 1.00 |" in text
    assert "| warm_again | 6.75 | 1.35 | 6.8 | 1.00 |" in text
    assert "/ warm_direct = 1.300, noop_again / noop_direct = 1.250" in text
