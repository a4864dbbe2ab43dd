"""Shared fixtures: a fixed-seed rng, the real MovieLens 100k copy (when present)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from synthetic import make_synthetic_movielens

from fedrec_app.data.partition import make_partitions

# Every process a test starts is ended after it when it fails or times out, and at the end of its
# module in any case (tests/process_cleanup.py says how and why then).
pytest_plugins = ["process_cleanup"]

os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FEDREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed-seed generator, so every test sees the same 'random' data."""
    return np.random.default_rng(20261127)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The internal MovieLens 100k copy (never committed); skip when this machine lacks it."""
    path = SHARED_DATA / "ml-100k"
    if not (path / "u.data").is_file():
        pytest.skip(f"MovieLens 100k copy not found at {path}")
    return path


@pytest.fixture(scope="session")
def ml100k_zip() -> Path:
    path = SHARED_DATA / "ml-100k.zip"
    if not path.is_file():
        pytest.skip(f"MovieLens 100k archive not found at {path}")
    return path


@pytest.fixture(scope="session")
def synthetic_ml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MovieLens-100k-format folder (``…/ml-100k``); see tests/synthetic.py."""
    return make_synthetic_movielens(tmp_path_factory.mktemp("synthetic") / "ml-100k", seed=7)


@pytest.fixture(scope="module")
def partition_set(synthetic_ml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set split for two nodes (u1, seed 3)."""
    out = tmp_path_factory.mktemp("parts") / "synthetic-2"
    make_partitions(synthetic_ml, out, 2, split="u1", seed=3)
    return out
