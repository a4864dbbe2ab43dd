"""`fedrec up`'s terminal output: numbered steps with wall times, the ServerApp lines shown while
training, what the launch locks, and a warning for a host other than loopback."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from fedrec_app.ops.progress import reported_step

if TYPE_CHECKING:
    from fedrec_app.ops.federation import LocalFederation

STEPS = (
    "data",
    "partitions",
    "certs",
    "keys",
    "trainers",
    "superlink",
    "register",
    "supernodes",
    "submit",
    "train",
    "gateway",
)
_SERVER_LINE = re.compile(r"\bfedrec_app\.[\w.]+: (.*)$|\b(ERROR|WARNING)\s*:\s*(.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class StepReport:
    """The numbered step list with wall times, written through ``say`` (the CLI passes print);
    the hooks ``LocalFederation.start`` reports its steps through."""

    def __init__(self, say: Callable[[str], None], steps: tuple[str, ...] = STEPS) -> None:
        self.say = say
        self.steps = steps
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()
        # lines to show at the end of a step, before its wall time (e.g. what the SuperLink locks)
        self.closing_notes: dict[str, list[str]] = {}

    def step_started(self, name: str, what: str) -> None:
        self.say(f"[{self.steps.index(name) + 1}/{len(self.steps)}] {name}: {what}")

    def note(self, text: str) -> None:
        self.say(f"      {text}")

    def step_done(self, name: str, seconds: float) -> None:
        for line in self.closing_notes.pop(name, []):
            self.note(line)
        self.timings[name] = seconds
        self.say(f"      {name} done in {seconds:.1f} s")

    def step(self, name: str, what: str) -> AbstractContextManager[None]:
        """A step of `fedrec up`'s own (data, partitions, train, gateway) around a block."""
        return reported_step(self, name, what, self.timings)

    def summary(self) -> str:
        rows = [f"  {name:<11} {seconds:7.1f} s" for name, seconds in self.timings.items()]
        total = time.monotonic() - self.started
        return "\n".join(["wall time per step:", *rows, f"  {'total':<11} {total:7.1f} s"])


def server_line(line: str) -> str | None:
    """What to show of one ServerApp log line: the app's own messages, Flower's errors."""
    match = _SERVER_LINE.search(ANSI.sub("", line).rstrip())
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else f"{match.group(2)}: {match.group(3)}"


def lock_summary(fed: LocalFederation) -> list[str]:
    """What this one-machine launch locks, and what it does not, in plain words."""
    if fed.fleet_proxy:
        lines = [
            f"locked: the network reaches only the Fleet proxy (nginx) on {fed.address}, which "
            "forwards the Fleet API alone (SuperNodes, each signing with its registered key)",
            f"the SuperLink's Control and runtime APIs listen on 127.0.0.1:{fed.link_port}: "
            "runs are started from this host only",
        ]
    else:
        lines = [
            f"NOT locked: nginx is not installed, so the SuperLink itself listens on "
            f"{fed.address} and whoever reaches that port can start runs and register nodes "
            "(apt-get install nginx-light, then run fedrec up again)",
        ]
    return [
        *lines,
        "SuperNodes run only this checkout's app (its FAB hash is their allowlist); every "
        "checkpoint is signed and the gateway verifies it",
        "not locked on one machine: every account on this host can reach 127.0.0.1 and so the "
        "Control API; a lab deployment keeps the SuperLink host to its operators "
        "(deploy/README.md)",
    ]


LOOPBACK_HOSTS = ("localhost", "::1")


def exposure_warning(
    host: str, gateway_port: int, fleet_port: int, fleet_proxy: bool, gateway_keys: bool = False
) -> str | None:
    """None on a loopback ``host``; else a WARNING naming each service the network now reaches
    (port and what protects it) and what stays on this host."""
    if host in LOOPBACK_HOSTS or host.startswith("127."):
        return None
    where = (
        "every network interface of this machine" if host in ("0.0.0.0", "::", "") else f"{host}"
    )
    gateway = (
        "HTTP, API key needed (except /healthz and the page)"
        if gateway_keys
        else "plain HTTP, NO API key: anyone who reaches it reads recommendations for every "
        "user id, the model summary, /metrics and /docs"
    )
    if fleet_proxy:
        fleet = (
            f"  - Fleet proxy (nginx) on port {fleet_port}: TLS; forwards only the Fleet "
            "API, every call signed by a registered SuperNode key"
        )
        local = "the SuperLink's Control and runtime APIs (127.0.0.1), "
    else:
        fleet = (
            f"  - SuperLink on port {fleet_port}: TLS and SuperNode auth on the Fleet API, "
            "but its Control API has NO login: whoever reaches the port can start runs "
            "(code on every node) (apt-get install nginx-light puts the Fleet proxy in "
            "front)"
        )
        local = ""
    return "\n".join(
        [
            f"WARNING: --host {host} listens on {where}; reachable from the network:",
            f"  - gateway on port {gateway_port}: {gateway}",
            fleet,
            f"  stays on this host: {local}the SuperNodes' runtime ports (127.0.0.1), the warm "
            "trainers (Unix sockets)",
            "  bind 127.0.0.1 (the default) unless other machines must reach these; a lab "
            "deployment puts API keys on the gateway (deploy/README.md)",
        ]
    )
