"""Installs per role: pyproject.toml's extras hold what each host needs and no more, and the
`fedrec` CLI starts with only one role's extra installed (deploy/README.md section 2)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from import_blocker import NOT_IN_GATEWAY, run_cli_without, run_without

from fedrec_app.cli.extras import MODULE_EXTRAS, missing_extra_message

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
ROLES = ("data", "gateway", "operator", "superlink", "node", "simulation")
HEAVY = {"tensorflow", "keras", "ray", "flwr"}


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _name(requirement: str) -> tuple[str, set[str]]:
    """('flwr', {'simulation'}) for 'flwr[simulation]==1.42.0'."""
    match = re.match(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?", requirement)
    assert match, requirement
    extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
    return match.group(1).lower().replace("_", "-"), extras


def closure(extra: str | None) -> dict[str, list[str]]:
    """Every requirement `pip install 'fedrec[extra]'` pulls from this pyproject (base included,
    self-references followed): package name -> its requirement strings."""
    project = _project()
    optional = project["optional-dependencies"]
    seen: set[str] = set()
    found: dict[str, list[str]] = {}

    def add(requirements: list[str]) -> None:
        for req in requirements:
            name, extras = _name(req)
            if name == "fedrec":
                for sub in sorted(extras - seen):
                    seen.add(sub)
                    add(optional[sub])
            else:
                found.setdefault(name, []).append(req)

    add(project["dependencies"])
    if extra is not None:
        seen.add(extra)
        add(optional[extra])
    return found


def test_every_role_has_an_extra() -> None:
    optional = _project()["optional-dependencies"]
    assert set(ROLES) | {"gpu", "test"} <= set(optional)


def test_base_install_holds_nothing_heavy() -> None:
    base = closure(None)
    assert not HEAVY & set(base), base
    assert not {"pandas", "fastapi", "uvicorn"} & set(base), base


def test_gateway_holds_no_tensorflow_keras_ray_or_flower() -> None:
    gateway = closure("gateway")
    assert {"fastapi", "uvicorn", "prometheus-client", "numpy", "cryptography"} <= set(gateway)
    assert not (HEAVY | {"pandas"}) & set(gateway), gateway


def test_operator_has_flower_but_no_tensorflow() -> None:
    operator = closure("operator")
    assert "flwr" in operator
    assert not {"tensorflow", "keras", "ray"} & set(operator), operator


@pytest.mark.parametrize("role", ["superlink", "node"])
def test_training_roles_have_flower_and_tensorflow(role: str) -> None:
    assert {"flwr", "tensorflow", "keras"} <= set(closure(role))


def test_ray_only_with_simulation() -> None:
    optional = _project()["optional-dependencies"]
    for extra in optional:
        reqs = closure(extra)
        with_ray = "ray" in reqs or any("simulation" in _name(r)[1] for r in reqs.get("flwr", []))
        assert with_ray == (extra in ("simulation", "test")), (extra, reqs.get("flwr"))


def test_flower_pinned_exactly_everywhere() -> None:
    optional = _project()["optional-dependencies"]
    for extra in optional:
        for req in closure(extra).get("flwr", []):
            assert req.split(";")[0].strip().endswith("==1.42.0"), (extra, req)


def test_test_extra_installs_every_role() -> None:
    everything = closure("test")
    for role in ROLES:
        assert set(closure(role)) <= set(everything), role
    assert "pytest" in everything


def test_missing_module_names_the_extra_to_install() -> None:
    optional = _project()["optional-dependencies"]
    for module, extras in MODULE_EXTRAS.items():
        assert set(extras) <= set(optional), module
    message = missing_extra_message(ModuleNotFoundError("x", name="tensorflow.python"))
    assert message is not None and "pip install 'fedrec[node]'" in message
    assert missing_extra_message(ModuleNotFoundError("x", name="no_such_module")) is None


@pytest.mark.parametrize(
    "argv", [("--help",), ("gateway", "--help"), ("deploy", "--help"), ("checkpoint", "--help")]
)
def test_cli_starts_with_only_the_gateway_extra(argv: tuple[str, ...]) -> None:
    result = run_cli_without(NOT_IN_GATEWAY, *argv)
    assert result.returncode == 0, result.stderr
    assert "usage: fedrec" in result.stdout


IMPORT_GATEWAY_HOST_MODULES = """
import importlib, pkgutil
import fedrec_app.ops as ops
names = [m.name for m in pkgutil.iter_modules(ops.__path__, "fedrec_app.ops.")]
names.remove("fedrec_app.ops.supernode_main")  # the SuperNode's entry point: node hosts only
gateway_side = ["fedrec_app.gateway.main", "fedrec_app.core.checkpoint", "fedrec_app.core.signing"]
for name in names + gateway_side:
    importlib.import_module(name)
print(len(names))
"""


def test_gateway_host_modules_import_with_only_the_gateway_extra() -> None:
    # The gateway host runs `fedrec gateway`, `fedrec deploy gateway`, `fedrec checkpoint publish`
    # and `fedrec certs`: the gateway and every ops module import without the heavy packages.
    result = run_without(NOT_IN_GATEWAY, IMPORT_GATEWAY_HOST_MODULES)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 6


def test_command_without_its_extra_says_what_to_install() -> None:
    result = run_cli_without(NOT_IN_GATEWAY, "app", "hash", str(PYPROJECT.parent))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "'flwr'" in result.stderr and "pip install 'fedrec[operator]'" in result.stderr


def test_unknown_missing_module_is_still_a_traceback() -> None:
    # A module no extra provides is a bug, not an install question: it must not be hidden.
    result = run_cli_without(("fedrec_app.ops.app_approval",), "app", "hash", ".")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
