"""ServerApp: FedAvg over `num-arrays` arrays for `num-server-rounds`, logging seconds per round."""

import time

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes = int(cfg["min-nodes"])
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=float(cfg["fraction-evaluate"]),
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
    )
    started = time.monotonic()
    last = [started]

    def round_done(server_round: int, arrays: ArrayRecord) -> None:
        now = time.monotonic()
        if server_round > 0:  # round 0 is the initial arrays
            print(f"[noopapp] round {server_round} seconds={now - last[0]:.2f}", flush=True)
        last[0] = now

    size, count = int(cfg["array-size"]), int(cfg["num-arrays"])
    initial = ArrayRecord([np.full(size, i, dtype=np.float32) for i in range(count)])
    rounds = int(cfg["num-server-rounds"])
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=rounds,
        timeout=float(cfg["round-timeout"]),
        evaluate_fn=round_done,
    )
    total = time.monotonic() - started
    print(
        f"[noopapp] {rounds} rounds in {total:.2f} s ({total / rounds:.2f} s per round)", flush=True
    )
