"""Fixtures for the data-layer tests: a zip of the synthetic data set and writable copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from synthetic import zip_movielens


@pytest.fixture(scope="session")
def synthetic_zip(synthetic_ml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic folder packed like the official archive (top folder ``ml-100k/``)."""
    return zip_movielens(synthetic_ml, tmp_path_factory.mktemp("zip") / "ml-100k.zip")


@pytest.fixture
def ml_copy(synthetic_ml: Path, tmp_path: Path) -> Path:
    """A writable copy of the synthetic folder, for tests that damage files."""
    return Path(shutil.copytree(synthetic_ml, tmp_path / "ml-100k"))
