"""The serving model: one verified checkpoint, precomputed for fast requests (numpy only).

A recommendation is a few small steps: candidates (genre, exclusions, and for a known user the
movies they rated) → scores (one matrix-vector product per head) → threshold (predicted rating
>= min) → top-N (partial sort) → items (precomputed titles, years, genres).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedrec_app.core import scoring
from fedrec_app.core.checkpoint import Checkpoint, read_checkpoint
from fedrec_app.core.rated import RATED_ARRAYS, RATED_ITEMS, RATED_OFFSETS
from fedrec_app.data.catalogue import movie_year
from fedrec_app.gateway.foldin import FoldInParams, fold_in_ranking, fold_in_rating

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class UnknownIdsError(LookupError):
    """Ids the checkpoint does not hold, by kind ("user", "movie"); the message names them all."""

    def __init__(self, unknown: Mapping[str, Iterable[int]]) -> None:
        self.unknown: dict[str, list[int]] = {
            kind: sorted(set(ids)) for kind, ids in unknown.items() if ids
        }
        super().__init__("; ".join(_named(kind, ids) for kind, ids in self.unknown.items()))


def _named(kind: str, ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:20]) + (" …" if len(ids) > 20 else "")
    return f"unknown {kind} id{'s' if len(ids) > 1 else ''}: {shown}"


class UnknownGenreError(ValueError):
    """A genre filter no movie of the checkpoint has; the message lists the known genres."""

    def __init__(self, genre: str, known: Sequence[str]) -> None:
        self.genre, self.known = genre, list(known)
        super().__init__(f"genre: unknown genre {genre!r}; one of {', '.join(self.known)}")


@dataclass(frozen=True)
class UserVectors:
    """One user's side of both heads."""

    vector: np.ndarray
    bias: float
    rank_vector: np.ndarray


@dataclass(frozen=True)
class Scored:
    """One recommended item: its row, ranking score (the order) and predicted rating."""

    row: int
    score: float
    rating: float

    @property
    def match(self) -> int:
        """The ranking score as 0-100: ``100 * sigmoid(score)``, rounded (the list's order)."""
        return match_percent(self.score)


def match_percent(score: float) -> int:
    """``round(100 * sigmoid(score))``: how strongly the ranking head picks an item (0-100)."""
    return int(round(100.0 / (1.0 + math.exp(-max(min(score, 50.0), -50.0)))))


class Recommender:
    """Immutable serving state built from one checkpoint; safe to share between requests."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.manifest = checkpoint.manifest
        self.catalogue = checkpoint.catalogue
        arrays = checkpoint.arrays
        names = (*scoring.ITEM_ARRAYS, *scoring.GLOBAL_ARRAYS)
        if checkpoint.has_user_factors:
            names += scoring.USER_ARRAYS
        self.arrays: dict[str, np.ndarray] = {
            name: np.array(arrays[name], dtype=np.float32, order="C") for name in names
        }
        self.num_items = len(self.catalogue)
        if checkpoint.has_user_factors:
            self.user_ids = np.asarray(arrays["user_ids"], dtype=np.int64)
            self._user_rows = {int(u): r for r, u in enumerate(self.user_ids)}
        else:
            self.user_ids = np.empty(0, dtype=np.int64)
            self._user_rows = {}
        # Each user's rated movies as catalogue rows, CSR (absent in checkpoints written before
        # nodes shared them, and in private mode, which has no user rows at all).
        self._rated: tuple[np.ndarray, np.ndarray] | None = None
        if checkpoint.has_user_factors and all(name in arrays for name in RATED_ARRAYS):
            self._rated = (
                np.asarray(arrays[RATED_OFFSETS], dtype=np.int64),
                np.searchsorted(
                    np.asarray(self.catalogue.movie_ids, dtype=np.int64),
                    np.asarray(arrays[RATED_ITEMS], dtype=np.int64),
                ),
            )
        cat = self.catalogue
        # The year rule of read_items, also for checkpoints whose items.csv predates it (their
        # year was u.item's release date, sometimes a re-release).
        self.items: tuple[dict[str, Any], ...] = tuple(
            {"movie_id": int(m), "movie_title": t, "year": movie_year(t, y), "genres": list(g)}
            for m, t, y, g in zip(cat.movie_ids, cat.titles, cat.years, cat.genres, strict=True)
        )
        self._genre_masks = {
            genre: np.array([genre in g for g in cat.genres], dtype=bool)
            for genre in sorted({g for gs in cat.genres for g in gs})
        }
        self._search_titles = tuple(t.casefold() for t in cat.titles)
        self.fold_in_params = FoldInParams.from_hyperparameters(
            {
                **(self.manifest.get("run_config") or {}),
                **((self.manifest.get("model") or {}).get("hyperparameters") or {}),
            }
        )

    @classmethod
    def load(cls, folder: Path, verify_key: Ed25519PublicKey | None = None) -> Recommender:
        """Verify (the signature by ``verify_key`` when given, sha256, catalogue fingerprint)
        and load a checkpoint folder."""
        return cls(read_checkpoint(folder, verify_key))

    # ------------------------------------------------------------------ lookups
    @property
    def has_user_factors(self) -> bool:
        return bool(self._user_rows)

    @property
    def has_rated_movies(self) -> bool:
        """Whether the checkpoint says which movies each user rated (GET /recommend leaves
        them out)."""
        return self._rated is not None

    def rated_rows(self, user_id: int) -> np.ndarray:
        """Catalogue rows of the movies ``user_id`` rated (empty when the checkpoint does not
        say); UnknownIdsError for a user the checkpoint lacks."""
        self.require_known(user_ids=[user_id])
        if self._rated is None:
            return np.empty(0, dtype=np.int64)
        offsets, rows = self._rated
        row = self._user_rows[user_id]
        return rows[offsets[row] : offsets[row + 1]]

    @property
    def genres(self) -> tuple[str, ...]:
        return tuple(self._genre_masks)

    def require_known(self, user_ids: Iterable[int] = (), movie_ids: Iterable[int] = ()) -> None:
        """UnknownIdsError naming every user and every movie id the checkpoint does not hold."""
        unknown = {
            "user": [u for u in user_ids if u not in self._user_rows],
            "movie": [m for m in movie_ids if m not in self.catalogue],
        }
        if unknown["user"] or unknown["movie"]:
            raise UnknownIdsError(unknown)

    def checked_genre(self, genre: str | None) -> str | None:
        """``genre`` if some movie has it (None: no filter); else UnknownGenreError listing the
        known genres. The one genre check of every endpoint that filters by genre."""
        if genre is not None and genre not in self._genre_masks:
            raise UnknownGenreError(genre, self.genres)
        return genre

    def user(self, user_id: int) -> UserVectors:
        """The stored vectors of ``user_id``; UnknownIdsError if the checkpoint lacks them."""
        self.require_known(user_ids=[user_id])
        row = self._user_rows[user_id]
        arrays = self.arrays
        return UserVectors(
            arrays["user_embedding"][row],
            float(arrays["user_bias"][row]),
            arrays["user_rank_embedding"][row],
        )

    def item_rows(self, movie_ids: Iterable[int]) -> np.ndarray:
        """Rows of ``movie_ids`` in order; UnknownIdsError names every unknown id."""
        ids = list(movie_ids)
        cat = self.catalogue
        self.require_known(movie_ids=ids)
        return np.fromiter((cat.index_of(m) for m in ids), dtype=np.int64, count=len(ids))

    def search(self, query: str = "", genre: str | None = None, limit: int = 20) -> list[int]:
        """Rows whose title contains ``query`` (case-insensitive) and that have ``genre``;
        UnknownGenreError for a genre no movie has."""
        needle = query.casefold().strip()
        genre = self.checked_genre(genre)
        mask = None if genre is None else self._genre_masks[genre]
        rows: list[int] = []
        for row, title in enumerate(self._search_titles):
            if (mask is None or mask[row]) and needle in title:
                rows.append(row)
                if len(rows) >= limit:
                    break
        return rows

    # ------------------------------------------------------------------ serving steps
    def candidates(self, genre: str | None = None, exclude_rows: Iterable[int] = ()) -> np.ndarray:
        """Boolean mask of the items that may be recommended; UnknownGenreError for a genre no
        movie has."""
        genre = self.checked_genre(genre)
        if genre is not None:
            mask = self._genre_masks[genre].copy()
        else:
            mask = np.ones(self.num_items, dtype=bool)
        mask[np.fromiter(exclude_rows, dtype=np.int64)] = False
        return mask

    def recommend(
        self,
        user: UserVectors,
        n: int,
        min_rating: float,
        candidates: np.ndarray | None = None,
    ) -> list[Scored]:
        """The ``n`` best candidates by ranking score with predicted rating >= ``min_rating``."""
        scores = scoring.ranking_scores(self.arrays, user.rank_vector)
        ratings = scoring.predict_ratings(self.arrays, user.vector, user.bias)
        allowed = ratings >= min_rating
        if candidates is not None:
            allowed &= candidates
        rows = scoring.top_n(scores, n, exclude=~allowed)
        return [Scored(int(r), float(scores[r]), float(ratings[r])) for r in rows]

    def fold_in(self, movie_ids: Sequence[int], ratings: Sequence[float]) -> UserVectors:
        """Vectors for a new user who gave ``ratings`` to ``movie_ids`` (see ``foldin``)."""
        rows = self.item_rows(movie_ids)
        values = np.asarray(ratings, dtype=np.float64)
        vector, bias = fold_in_rating(self.arrays, rows, values, self.fold_in_params)
        rank_vector = fold_in_ranking(self.arrays, rows, self.fold_in_params, values)
        return UserVectors(vector, bias, rank_vector)

    def predict(self, user_ids: Sequence[int], movie_ids: Sequence[int]) -> np.ndarray:
        """Predicted ratings (1-5, unrounded) of the (user, movie) pairs, in order;
        UnknownIdsError names every unknown user and movie id."""
        self.require_known(user_ids, movie_ids)
        items = self.item_rows(movie_ids)
        users = np.fromiter((self._user_rows[u] for u in user_ids), np.int64, len(user_ids))
        return scoring.predict_pairs(self.arrays, users, items)
