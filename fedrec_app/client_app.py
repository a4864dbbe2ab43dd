"""Flower ClientApp (thin): a node trains on its own partition; the work is in
``fedrec_app.node.task``.

With the node's warm trainer running, the message goes to it
(``fedrec_app.node.trainer_client``) and this process imports neither pandas nor TensorFlow;
without one, it does the work here.
A failure is logged in full here, on the node, and the server gets only ``fedrec:<code>``.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedrec_app.core import protocol
from fedrec_app.core.app_logging import log_to_stderr
from fedrec_app.core.config import parse_run_config

log = logging.getLogger("fedrec_app.client_app")

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: evaluate the incoming global model, train local epochs, reply item rows."""
    return _serve(msg, context, "train_round")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the final global model with this node's user rows."""
    return _serve(msg, context, "evaluate_round")


def _serve(msg: Message, context: Context, operation: str) -> Message:
    """Hand the message to the node's warm trainer if one runs, else run ``fedrec_app.node.task``'s
    ``operation`` here."""
    from fedrec_app.node.setup import NodeFailure, node_setup
    from fedrec_app.node.trainer_client import ask

    log_to_stderr()
    try:
        run_cfg = parse_run_config(context.run_config)
        setup = node_setup(context.node_config, run_cfg, context.node_id)
        reply = ask(
            setup.state_dir,
            operation,
            msg.content,
            context.run_config,
            context.node_config,
            context.node_id,
            context.run_id,
        )
        where = "by the warm trainer (details in its log)"
        if reply is None:
            from fedrec_app.node import task  # pandas; TensorFlow once it trains

            reply = getattr(task, operation)(msg.content, run_cfg, setup, context.run_id)
            where = "in this process (no warm trainer answered)"
        protocol.add_site_name(reply, context.node_config)
        config = msg.content.config_records.get(protocol.CONFIG)
        log.info(
            "run %s, round %s: %s message done %s",
            context.run_id,
            config.get("round", "?") if config is not None else "?",
            msg.metadata.message_type,
            where,
        )
        return Message(reply, reply_to=msg)
    except NodeFailure as exc:
        level = logging.INFO if exc.code == "stale" else logging.ERROR
        log.log(level, "run %s: %s", context.run_id, exc, exc_info=exc.code != "stale")
        code = exc.code
    except Exception:
        log.exception("run %s: %s message failed", context.run_id, msg.metadata.message_type)
        code = "internal"
    error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=protocol.error_reason(code))
    return Message(error, reply_to=msg)
