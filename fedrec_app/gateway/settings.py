"""Everything the gateway can be configured with, in one place: flags, environment, defaults.

Each field ``x_y`` is the flag ``--x-y`` of `fedrec gateway` and the environment variable
``FEDREC_GATEWAY_X_Y`` (e.g. from a systemd unit's ``Environment=``); a flag overrides its
variable, which overrides the default. ``load_settings`` reports every bad value naming its flag
or variable. docs/gateway.md lists them all.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedrec_app.core.errors import FedrecError

ENV_PREFIX = "FEDREC_GATEWAY_"


class SettingsError(FedrecError):
    """A bad gateway setting: the message names its flag or environment variable."""


class GatewaySettings(BaseSettings):
    """Gateway configuration; ``load_settings`` fills it from flags and the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # `Environment=FEDREC_GATEWAY_X=` leaves X at its default
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    checkpoint: Path
    """A checkpoint folder (final/, latest, round-NNNN) or a run folder (serves its final/, else
    latest/)."""
    verify_key: Path | None = None
    """The federation's public key (federation-signing.pub from `fedrec certs`): only checkpoints
    whose signature it verifies are served, at start and at every reload. Required unless
    allow-unsigned."""
    allow_unsigned: bool = False
    """INSECURE: serve checkpoints without checking any signature (logged as a warning; for local
    experiments only)."""
    host: str = "127.0.0.1"
    """Bind address."""
    port: int = Field(8080, ge=1, le=65535)
    """TCP port."""
    tls: bool = False
    """Serve HTTPS with cert and key."""
    cert: Path = Path("certs/server.pem")
    """Certificate (PEM) from `fedrec certs`."""
    key: Path = Path("certs/server.key")
    """Its private key."""
    api_key_file: Path | None = None
    """File with one API key per line; requests then need 'Authorization: Bearer <key>'
    (/healthz and the page stay open)."""
    watch: bool = False
    """Reload when the served folder (e.g. latest/ or final/) changes."""
    watch_interval: float = Field(2.0, gt=0)
    """Seconds between two looks at the served folder."""
    min_rating: float = Field(2.0, ge=1, le=5)
    """Recommend only items predicted at least this."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (empty: CORS off); in the environment a JSON list."""
    max_body_bytes: int = Field(1 << 20, ge=1)
    """Largest request body accepted."""
    max_connections_per_client: int = Field(64, ge=0)
    """Open connections one client address may hold; more are refused at once (0: no cap, e.g.
    behind a proxy that applies its own)."""
    max_connections: int = Field(4096, ge=0)
    """Open connections in all; more are refused at once (0: no cap)."""
    header_timeout: float = Field(10.0, ge=0)
    """Close a connection whose request header is not complete this many seconds after it opened
    or after a request's first byte (0: never)."""
    open_docs: bool = False
    """With an API key file, still serve /docs, /redoc and /openapi.json without a key (without
    keys they are always open)."""

    _api_keys: frozenset[str] = PrivateAttr(default=frozenset())

    @model_validator(mode="after")
    def _signatures_checked_or_waived(self) -> GatewaySettings:
        if self.verify_key is None and not self.allow_unsigned:
            raise ValueError(
                f"--verify-key PUBFILE is required (env {env_var('verify_key')}): the "
                "federation's federation-signing.pub (from `fedrec certs`); only checkpoints "
                "it verifies are served. "
                f"{flag_and_env('allow_unsigned')} serves unsigned checkpoints (insecure)"
            )
        if self.verify_key is not None and self.allow_unsigned:
            both = f"{flag_and_env('verify_key')} and {flag_and_env('allow_unsigned')}"
            raise ValueError(f"{both} exclude each other")
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Read the API keys once, as the settings are made (the file is the setting)."""
        if self.api_key_file is not None:
            from fedrec_app.gateway.security import load_api_keys  # FastAPI: not for --help

            self._api_keys = load_api_keys(self.api_key_file)

    @property
    def api_keys(self) -> frozenset[str]:
        """The keys read from ``api_key_file``; empty means no authentication."""
        return self._api_keys


def env_var(field: str) -> str:
    """``verify_key`` -> ``FEDREC_GATEWAY_VERIFY_KEY``."""
    return ENV_PREFIX + field.upper()


def flag_and_env(field: str) -> str:
    """``verify_key`` -> ``--verify-key / FEDREC_GATEWAY_VERIFY_KEY``."""
    return f"--{field.replace('_', '-')} / {env_var(field)}"


def load_settings(flags: Mapping[str, Any]) -> GatewaySettings:
    """The settings from the given flags (field name -> value), else ``FEDREC_GATEWAY_*``
    variables, else defaults; raise SettingsError naming each bad flag or variable."""
    fields = list(GatewaySettings.model_fields)
    for name in sorted(os.environ):
        setting = name.upper().removeprefix(ENV_PREFIX).lower()
        if name.upper().startswith(ENV_PREFIX) and setting not in fields:
            close = difflib.get_close_matches(setting, fields, n=1)
            hint = f"did you mean {env_var(close[0])}?" if close else "docs/gateway.md lists them"
            raise SettingsError(f"{name}: not a gateway setting ({hint})")
    try:
        return GatewaySettings(**flags)
    except ValidationError as exc:
        raise SettingsError("; ".join(_problem(error, flags) for error in exc.errors())) from None
    except FedrecError as exc:  # the API key file, read as the settings are made
        raise SettingsError(f"{_source('api_key_file', flags)}: {exc}") from None


def _problem(error: ErrorDetails, flags: Mapping[str, Any]) -> str:
    """One validation error as ``FEDREC_GATEWAY_PORT 'x': what is wrong``."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message
    name = str(error["loc"][0])
    if error["type"] == "missing":
        return f"{flag_and_env(name)}: required"
    return f"{_source(name, flags)} {error['input']!r}: {message}"


def _source(name: str, flags: Mapping[str, Any]) -> str:
    """Where the value of field ``name`` came from: its flag if given, else its variable."""
    return f"--{name.replace('_', '-')}" if name in flags else env_var(name)
