"""ClientApp: importing it leaves ``MARKER-imported-<pid>`` beside this file (in the node's
installed FAB); training leaves ``MARKER-node-<node id>`` in run-config ``marker-dir``."""

import os
from pathlib import Path

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

(Path(__file__).parent / f"MARKER-imported-{os.getpid()}").write_text("imported\n")

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    folder = Path(str(context.run_config["marker-dir"]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"MARKER-node-{context.node_id}").write_text(f"run {context.run_id}\n")
    metrics = MetricRecord({"num-examples": 1})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
