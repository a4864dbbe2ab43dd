"""The schema of `deploy/federation.yaml` as pydantic models, and its errors as field paths.

The models mirror the YAML: kebab-case keys, strict types (`port: "9093"` is refused, not
converted), no unknown keys, and a key given no value takes its default. `load_manifest`
(`fedrec_app.ops.manifest`) turns a validated document into the specs the roles launch from:
paths resolved against `root`, defaults that depend on other fields filled in.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number 1-65535")
    return value


def _address(value: str) -> str:
    if not value.strip() or " " in value:
        raise ValueError("must be an IP address or DNS name")
    return value


def _path_text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _node_name(value: str) -> str:
    if not value.strip() or "/" in value:
        raise ValueError("must be a non-empty name without '/'")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be > 0")
    return value


Port = Annotated[int, AfterValidator(_port)]
Address = Annotated[str, AfterValidator(_address)]
PathText = Annotated[str, AfterValidator(_path_text)]
"""A path as written: relative ones resolve against `root`."""


class _Section(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, alias_generator=_kebab, populate_by_name=True
    )

    @model_validator(mode="before")
    @classmethod
    def _no_value_is_absent(cls, data: Any) -> Any:
        """`key:` with no value takes the key's default, as if it were absent."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class SuperLinkDoc(_Section):
    """`superlink:`: the Fleet proxy on the lab network and the SuperLink behind it."""

    address: Address
    port: Port
    bind: Address | None = None
    control_port: Port = 9092
    ca_cert: PathText
    server_cert: PathText
    server_key: PathText
    database: PathText
    flwr_home: PathText | None = None
    log_file: PathText | None = None
    proxy_dir: PathText | None = None


class SuperNodeDoc(_Section):
    """One entry of `supernodes:`."""

    name: Annotated[str, AfterValidator(_node_name)]
    superlink: Address | None = None
    ca_cert: PathText | None = None
    private_key: PathText
    public_key: PathText | None = None
    data_path: PathText
    state_dir: PathText
    flwr_home: PathText | None = None
    gpu: int = -1
    runtime_port: Port = 9094
    max_wait_time: Annotated[float, AfterValidator(_positive)] = 600.0
    approved_apps: PathText | None = None


class GatewayDoc(_Section):
    """`gateway:`: the host that serves recommendations from the published checkpoint."""

    host: Address
    port: Port
    checkpoint: PathText
    tls: bool = True
    cert: PathText | None = None
    key: PathText | None = None
    api_key_file: PathText | None = None
    verify_key: PathText


class FederationDoc(_Section):
    """The whole `federation.yaml`."""

    root: str = "."
    superlink: SuperLinkDoc
    supernodes: Annotated[list[SuperNodeDoc], Field(min_length=1)]
    cli_home: PathText | None = None
    gateway: GatewayDoc | None = None


_SECTIONS: dict[str, type[BaseModel]] = {
    "superlink": SuperLinkDoc,
    "supernodes": SuperNodeDoc,
    "gateway": GatewayDoc,
}
_EXPECTED = {
    "int_type": "int",
    "bool_type": "bool",
    "string_type": "str",
    "float_type": "int or float",
}
_CONTAINERS = {"model_type": "a mapping", "dict_type": "a mapping", "list_type": "a list"}


def problems(error: ValidationError) -> list[str]:
    """Each error of a FederationDoc validation as ``field.path: what is wrong``."""
    return [_problem(detail) for detail in error.errors()]


def _problem(detail: ErrorDetails) -> str:
    loc = detail["loc"]
    kind = detail["type"]
    value = detail["input"]
    if kind == "missing":
        what = "missing (required)"
    elif kind == "extra_forbidden":
        what = f"unknown field (known: {', '.join(_known_fields(loc))})"
    elif kind in _EXPECTED:
        what = f"must be {_EXPECTED[kind]}, got {value!r}"
    elif kind in _CONTAINERS:
        what = f"must be {_CONTAINERS[kind]}, got {type(value).__name__}"
    elif kind == "too_short":
        what = "must not be empty"
    elif kind == "value_error":
        what = str(detail["ctx"]["error"])
    else:
        what = detail["msg"]
    return f"{_field_path(loc)}: {what}" if loc else what


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``("supernodes", 1, "data-path")`` -> ``supernodes[1].data-path``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]


def _known_fields(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping that holds ``loc``'s last key may have."""
    model = _SECTIONS.get(str(loc[0]), FederationDoc) if len(loc) > 1 else FederationDoc
    return sorted(_kebab(name) for name in model.model_fields)
