"""ServerApp: one train message to each of ``min-nodes`` nodes; the run fails, naming each node
and its reason, when no node ran the ClientApp (e.g. every node refused the app)."""

import time

from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    wanted = int(cfg["min-nodes"])
    deadline = time.monotonic() + float(cfg["node-wait-timeout"])
    while len(nodes := sorted(grid.get_node_ids())) < wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {wanted} nodes connected")
        time.sleep(1.0)
    messages = [
        Message(
            RecordDict({"config": ConfigRecord({"round": 1})}),
            dst_node_id=node,
            message_type=MessageType.TRAIN,
            group_id="1",
        )
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=float(cfg["round-timeout"])))
    failed = sorted(
        f"node {r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()
    )
    ran = len(replies) - len(failed)
    if not ran:
        raise RuntimeError(
            f"no node ran the ClientApp ({len(replies)} of {len(nodes)} "
            f"replied): " + "; ".join(failed)
        )
    print(f"[markerapp] {ran} of {len(nodes)} node(s) ran the ClientApp", flush=True)
