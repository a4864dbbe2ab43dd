"""GET /recommend (a known user) and POST /recommend (a new user's ratings, folded in)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query

from fedrec_app.gateway.deps import RecommenderDep, SettingsDep
from fedrec_app.gateway.recommender import Recommender, Scored
from fedrec_app.gateway.schemas import (
    FoldInRecommendations,
    FoldInRequest,
    Recommendation,
    RecommendQuery,
    UserRecommendations,
)

router = APIRouter(tags=["recommend"])


@router.get("/recommend", response_model=UserRecommendations)
async def recommend_for_user(
    recommender: RecommenderDep,
    settings: SettingsDep,
    query: Annotated[RecommendQuery, Query()],
) -> UserRecommendations:
    """Top-``n`` movies for ``user_id`` by ranking score (``match``), predicted rating >= the
    threshold, never a movie the user rated (when the checkpoint says which: ``/readyz``'s
    ``has_rated_movies``) nor one of ``exclude``.

    An unknown user and unknown ``exclude`` ids are named together (404); an unknown genre is
    422 (``Recommender.checked_genre``, as for GET /movies)."""
    user_id = query.user_id
    if not recommender.has_user_factors:
        raise HTTPException(
            404,
            f"unknown user id: {user_id} (this checkpoint holds no user factors; "
            "POST /recommend with the user's ratings instead)",
        )
    recommender.require_known(user_ids=[user_id], movie_ids=query.exclude)  # 404 naming all
    user = recommender.user(user_id)
    exclude = np.concatenate(
        [recommender.item_rows(query.exclude), recommender.rated_rows(user_id)]
    )
    candidates = recommender.candidates(query.genre, exclude)
    scored = recommender.recommend(user, query.n, settings.min_rating, candidates)
    return UserRecommendations(user_id=user_id, recommendations=_items(recommender, scored))


@router.post("/recommend", response_model=FoldInRecommendations)
async def recommend_from_ratings(
    body: FoldInRequest, recommender: RecommenderDep, settings: SettingsDep
) -> FoldInRecommendations:
    """Top-``n`` movies for someone known only by ``ratings``; the rated movies are excluded."""
    movie_ids = [r.movie_id for r in body.ratings]
    duplicates = sorted({m for m in movie_ids if movie_ids.count(m) > 1})
    if duplicates:
        raise HTTPException(422, f"ratings: movie ids rated more than once: {duplicates}")
    user = recommender.fold_in(movie_ids, [r.rating for r in body.ratings])
    candidates = recommender.candidates(body.genre, recommender.item_rows(movie_ids))
    scored = recommender.recommend(user, body.n, settings.min_rating, candidates)
    return FoldInRecommendations(rated=len(movie_ids), recommendations=_items(recommender, scored))


def _items(recommender: Recommender, scored: list[Scored]) -> list[Recommendation]:
    return [
        Recommendation(
            **recommender.items[s.row],
            predicted_rating=round(s.rating, 1),
            match=s.match,
            score=s.score,
        )
        for s in scored
    ]
