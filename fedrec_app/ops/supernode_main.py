"""`flower-supernode` that runs only approved apps and polls again soon after each reply.

**App approval.** ``--approved-apps FILE`` (an allowlist of FAB sha256 digests, see
``fedrec_app.ops.app_approval``) or an explicit ``--allow-any-app`` (logs a WARNING) must come
first; the remaining arguments go to Flower. With ``--approved-apps`` the node, for each run it
has not seen yet, hashes the FAB it fetched itself (it does not trust the hash the SuperLink
claims), reads the allowlist again and, for a FAB not on it, stores an error reply
(``protocol.refusal_reason``: node id, app hash) instead of the run: no task is created, so no
``flwr-clientapp`` starts and none of the app's code runs here; the node logs it at ERROR and
serves the next run. This wraps ``_pull_and_store_message`` of Flower's SuperNode loop, so it
starts only on the Flower it was verified on (``VERIFIED_FLOWER``, with the same source of the
functions it wraps): on any other it exits non-zero (fail closed).

**Quick poll.** Flower 1.42's SuperNode sleeps a hard-coded 3 s whenever a pull finds no
message. Right after it sends a reply its next pull is nearly always empty (the ServerApp is
still waiting for the other nodes or aggregating), so every round pays most of those 3 s on
every node. This entry point changes only that one wait: for ``QUICK_POLL_WINDOW`` seconds
after start-up and after each reply it polls every ``QUICK_POLL`` seconds, then every 3 s as
before. Every launch path starts SuperNodes through it (`SuperNodeCommand`). With a Flower whose
loop differs it warns and polls as Flower does (when the app gate is off: the gate refuses to
start on such a Flower).

Run as ``python -m fedrec_app.ops.supernode_main (--approved-apps FILE | --allow-any-app) ARGS``:
ARGS are ``flower-supernode``'s.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fedrec_app.core import protocol
from fedrec_app.core.app_logging import log_to_stderr
from fedrec_app.ops.app_approval import AppGate, ApprovalError, Verdict, read_allowlist

log = logging.getLogger("fedrec_app.ops.supernode_main")  # also when run as __main__

QUICK_POLL = 0.25
QUICK_POLL_WINDOW = 20.0
FLOWER_IDLE_WAIT = 3  # the literal in flwr/supernode/start_client_internal.py


class QuickPollClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop; only its idle wait
    (``sleep(3)``) changes: short within ``window`` seconds of the last reply or start."""

    def __init__(
        self, quick: float = QUICK_POLL, window: float = QUICK_POLL_WINDOW, clock: ModuleType = time
    ) -> None:
        self._time = clock
        self.quick = quick
        self.window = window
        self.last_activity = clock.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)

    def replied(self) -> None:
        self.last_activity = self._time.monotonic()

    def sleep(self, seconds: float) -> None:
        quiet_for = self._time.monotonic() - self.last_activity
        if seconds == FLOWER_IDLE_WAIT and quiet_for < self.window:
            seconds = self.quick
        self._time.sleep(seconds)


def install(module: ModuleType, clock: QuickPollClock) -> None:
    """Put ``clock`` into Flower's SuperNode loop module; fail loudly if the loop changed."""
    push: Callable[..., None] | None = getattr(module, "_push_messages", None)
    if getattr(module, "time", None) is not time or push is None:
        raise RuntimeError(
            f"{module.__name__} no longer has the loop the quick poll knows (flwr 1.42)"
        )

    def push_then_poll_quickly(*args: Any, **kwargs: Any) -> None:
        push(*args, **kwargs)
        clock.replied()

    module.time = clock  # type: ignore[attr-defined]
    module._push_messages = push_then_poll_quickly  # type: ignore[attr-defined]


APPROVED_APPS, ALLOW_ANY_APP = "--approved-apps", "--allow-any-app"
VERIFIED_FLOWER = "1.42.0"
# sha256 of the source of the loop functions the gate relies on, as in flwr 1.42.0: the loop calls
# `_pull_and_store_message` by its module name and sends the replies it stored; that function
# fetches a new run's FAB through `get_fab` before it creates any task, and lets an exception
# from there through; `_insert_message` stores a reply.
VERIFIED_SOURCES = {
    "start_client_internal": "9e89a6eb68fbec6821e817cd2c09f7894fc7b0f5725c2365b19a7122307f11f3",
    "_pull_and_store_message": "eaf5d0e36dc34e4cf46a490511d077ac55cc8edbbcdbe938c1f6dbcb758628be",
    "_insert_message": "a0c6f4605e993f04cf4774c215b0322db5d80de1b3b564e79af112c909908d21",
}


class GateError(RuntimeError):
    """The installed Flower is not the one the app gate was verified on."""


def check_flower(module: ModuleType, version: str | None = None) -> None:
    """GateError unless Flower is ``VERIFIED_FLOWER`` with the loop functions it had there."""
    if version is None:
        try:
            version = importlib.metadata.version("flwr")
        except importlib.metadata.PackageNotFoundError:
            version = "not installed as 'flwr'"
    if version != VERIFIED_FLOWER:
        raise GateError(
            f"the app gate is verified on flwr {VERIFIED_FLOWER} only, this is flwr "
            f"{version}: install flwr=={VERIFIED_FLOWER}"
        )
    for name, expected in VERIFIED_SOURCES.items():
        function = getattr(module, name, None)
        try:
            source = inspect.getsource(function) if callable(function) else ""
        except (OSError, TypeError):
            source = ""
        if hashlib.sha256(source.encode()).hexdigest() != expected:
            raise GateError(
                f"{module.__name__}.{name} is not the code the app gate was verified "
                f"on (flwr {VERIFIED_FLOWER}): refusing to start"
            )


class _Refused(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.detail)
        self.verdict = verdict


def install_gate(module: ModuleType, gate: AppGate) -> None:
    """Make Flower's SuperNode loop (``module``) refuse every run whose FAB ``gate`` refuses:
    an error reply instead of a task (see the module docstring). GateError on another Flower."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    check_flower(module)
    pull: Callable[..., int | None] = module._pull_and_store_message
    insert: Callable[..., None] = module._insert_message
    signature = inspect.signature(pull)

    def gated_pull(*args: Any, **kwargs: Any) -> int | None:
        bound = signature.bind(*args, **kwargs)
        receive, get_fab = bound.arguments["receive"], bound.arguments["get_fab"]
        received: list[Message] = []

        def receive_and_keep() -> Any:
            got = receive()
            if got is not None:
                received.append(got[0])
            return got

        def get_approved_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            verdict = gate.check(fab.content, claimed=(fab_hash, fab.hash_str))
            if not verdict.approved:
                raise _Refused(verdict)
            log.info("run %s: app %s is approved here (%s)", run_id, verdict.digest, verdict.detail)
            return fab

        bound.arguments["receive"] = receive_and_keep
        bound.arguments["get_fab"] = get_approved_fab
        try:
            return pull(*bound.args, **bound.kwargs)
        except _Refused as refused:
            message = received[-1]
            state, store = bound.arguments["state"], bound.arguments["object_store"]
            run_id = message.metadata.run_id
            reason = protocol.refusal_reason(state.get_node_id(), refused.verdict.digest)
            log.error(
                "run %s: %s (%s); refused: no ClientApp runs, an error reply goes back",
                run_id,
                reason,
                refused.verdict.detail,
            )
            reply = Message(Error(code=ErrorCode.INVALID_FAB, reason=reason), reply_to=message)
            message_id = message.metadata.message_id  # no ClientApp time to report: zero
            state.record_message_processing_start(message_id)
            state.record_message_processing_end(message_id)
            insert(reply, state, store)
            return run_id

    module._pull_and_store_message = gated_pull  # type: ignore[attr-defined]


def split_args(argv: list[str]) -> tuple[Path | None, bool, list[str]]:
    """(allowlist, allow any app, Flower's arguments); ValueError unless exactly one of
    ``--approved-apps FILE`` / ``--allow-any-app`` is given."""
    allowlist: Path | None = None
    allow_any = False
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == APPROVED_APPS or arg.startswith(APPROVED_APPS + "="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            if not value or value.startswith("--") or allowlist is not None:
                raise ValueError(f"{APPROVED_APPS} takes one FILE, once")
            allowlist = Path(value)
        elif arg == ALLOW_ANY_APP:
            allow_any = True
        else:
            rest.append(arg)
    if (allowlist is None) == (not allow_any):
        raise ValueError(
            f"give exactly one of {APPROVED_APPS} FILE (the FAB hashes this node's "
            f"admin approved) or {ALLOW_ANY_APP}"
        )
    return allowlist, allow_any, rest


def main(argv: list[str] | None = None) -> None:
    log_to_stderr()
    try:
        allowlist, _, flower_args = split_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        sys.exit(f"fedrec supernode: {exc}")

    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    if allowlist is None:
        log.warning(
            "%s: this SuperNode runs ANY app the SuperLink sends it (no allowlist)", ALLOW_ANY_APP
        )
    else:
        try:
            approved = read_allowlist(allowlist)
            install_gate(start_client_internal, AppGate(allowlist))
        except (ApprovalError, GateError) as exc:
            sys.exit(f"fedrec supernode: {APPROVED_APPS}: {exc}")
        log.info(
            "app approval on: only apps whose FAB sha256 is in %s run here (%d now; the "
            "file is read again for each new run)",
            allowlist.resolve(),
            len(approved),
        )
    try:
        install(start_client_internal, QuickPollClock())
    except RuntimeError as exc:  # another Flower: its own SuperNode, with its own waits
        log.warning("%s; polling as Flower does", exc)
    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


if __name__ == "__main__":
    main()
