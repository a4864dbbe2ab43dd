"""Flower ClientApp (thin): a node trains on its own partition; the work is in ``fedrec_app.node``.

A failure is logged in full here, on the node, and the server gets only ``fedrec:<code>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedrec_app import protocol
from fedrec_app.app_logging import log_to_stderr
from fedrec_app.config import parse_run_config

log = logging.getLogger("fedrec_app.client_app")

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: evaluate the incoming global model, train local epochs, reply item rows."""
    from fedrec_app.node import train_round

    return _serve(msg, context, train_round)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the final global model with this node's user rows."""
    from fedrec_app.node import evaluate_round

    return _serve(msg, context, evaluate_round)


def _serve(msg: Message, context: Context, work: Callable[..., RecordDict]) -> Message:
    """Hand the message to the node's warm trainer if one runs, else do ``work`` here."""
    from fedrec_app import trainer
    from fedrec_app.node import NodeFailure, node_setup

    log_to_stderr()
    try:
        run_cfg = parse_run_config(context.run_config)
        setup = node_setup(context.node_config, run_cfg, context.node_id)
        reply = trainer.ask(
            setup.state_dir,
            work.__name__,
            msg.content,
            context.run_config,
            context.node_config,
            context.node_id,
            context.run_id,
        )
        if reply is None:
            reply = work(msg.content, run_cfg, setup, context.run_id)
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
