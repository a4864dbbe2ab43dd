"""Which pip extra of fedrec provides a module: a command whose extra is not installed on this
host says what to install instead of a traceback (deploy/README.md section 2: installs per role).
"""

from __future__ import annotations

# Top-level module -> the extras (pyproject.toml [project.optional-dependencies]) that install it.
MODULE_EXTRAS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("node", "superlink"),
    "keras": ("node", "superlink"),
    "flwr": ("operator", "superlink", "node"),
    "grpc": ("operator", "superlink", "node"),
    "ray": ("simulation",),
    "fastapi": ("gateway",),
    "starlette": ("gateway",),
    "pydantic": ("gateway",),
    "pydantic_settings": ("gateway",),
    "uvicorn": ("gateway",),
    "prometheus_client": ("gateway",),
    "threadpoolctl": ("gateway",),
    "pandas": ("data", "node"),
    "httpx": ("data", "node"),
    "tqdm": ("data", "node"),
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """What to install for the module `exc` found missing; None when no extra provides it (a bug,
    not an install question)."""
    module = (exc.name or "").split(".")[0]
    extras = MODULE_EXTRAS.get(module)
    if extras is None:
        return None
    choices = " or ".join(f"pip install 'fedrec[{extra}]'" for extra in extras)
    return (
        f"this command needs the Python package {module!r}, which this host's install lacks; "
        f"install the extra of this host's role: {choices} (deploy/README.md section 2)"
    )
