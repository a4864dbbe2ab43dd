"""A Grid that hands each message straight to the ClientApp in this process (no SuperLink).

For unit tests of the server loop and the ClientApp together; the real federation is covered by
the integration tests. Nodes can be taken offline (``drop``) to simulate a dead SuperNode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity
from signing_keys import signing_key_file

from fedrec_app.client_app import app as client_app
from fedrec_app.core.config import app_defaults


class DirectGrid(Grid):
    def __init__(
        self, node_configs: Mapping[int, dict], run_id: int, run_config: Mapping[str, object]
    ) -> None:
        self.node_configs = dict(node_configs)
        self.online = set(node_configs)
        self.run_id = run_id
        self.run_config = dict(run_config)
        self.replies: dict[str, Message] = {}
        self.sent: list[Message] = []
        self._budget: dict[int, int] = {}
        # Message() reads the process's task identity, which Flower's runtime sets.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 1

    def set_run(self, run) -> None:  # noqa: ANN001 - Flower's signature
        raise NotImplementedError

    @property
    def run(self):  # noqa: ANN201
        raise NotImplementedError

    def create_message(self, *args, **kwargs) -> Message:  # noqa: ANN002, ANN003
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        return sorted(self.online)

    def drop(self, node_id: int) -> None:
        self.online.discard(node_id)

    def drop_after(self, node_id: int, messages: int) -> None:
        """Take ``node_id`` offline once it has answered ``messages`` messages."""
        self._budget[node_id] = messages

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = msg.object_id
            msg.metadata.__dict__["_run_id"] = self.run_id
            node = msg.metadata.dst_node_id
            self.sent.append(msg)
            if node in self.online:
                context = Context(
                    run_id=self.run_id,
                    node_id=node,
                    node_config=dict(self.node_configs[node]),
                    state=RecordDict(),
                    run_config=dict(self.run_config),
                )
                reply = client_app(msg, context)
                if node in self._budget:
                    self._budget[node] -= 1
                    if self._budget[node] <= 0:
                        self.drop(node)
            else:
                offline = Error(code=ErrorCode.NODE_UNAVAILABLE, reason="offline")
                reply = Message(offline, reply_to=msg)
            reply.metadata.__dict__["_src_node_id"] = node
            self.replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(mid) for mid in list(message_ids) if mid in self.replies]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        return self.pull_messages(self.push_messages(messages))


def app_run_config(partition_set: Path, ckpt: Path, **overrides: object) -> dict:
    """The app's defaults made small for tests: 2 rounds, tiny dims, short waits."""
    config = app_defaults()
    config.update(
        {
            "num-server-rounds": 2,
            "local-epochs": 1,
            "embedding-dim": 8,
            "rank-dim": 4,
            "checkpoint-dir": str(ckpt),
            "signing-key": str(signing_key_file()),
            "catalogue": str(partition_set / "items.csv"),
            "node-wait-timeout": 1.0,
            "round-timeout": 30.0,
        }
    )
    config.update({key.replace("_", "-"): value for key, value in overrides.items()})
    return config


def app_nodes(partition_set: Path, state: Path) -> dict[int, dict]:
    """Node configs of two nodes (one id above 2**63) on the set's two partitions."""
    return {
        101: {"data-path": str(partition_set / "partition-0"), "state-dir": str(state / "a")},
        2**63 + 7: {"data-path": str(partition_set / "partition-1"), "state-dir": str(state / "b")},
    }
