"""GET /movies (search) and GET /movies/{movie_id}, from the checkpoint's items.csv."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedrec_app.gateway.deps import RecommenderDep
from fedrec_app.gateway.schemas import Movie, MovieList

router = APIRouter(tags=["movies"])


@router.get("/movies", response_model=MovieList)
async def search_movies(
    recommender: RecommenderDep,
    q: Annotated[str, Query(max_length=200, description="Part of the title")] = "",
    genre: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> MovieList:
    """Movies whose title contains ``q`` (case-insensitive), optionally of one genre (an
    unknown genre is 422 listing the known ones, the check GET /recommend makes)."""
    rows = recommender.search(q, genre, limit)
    return MovieList(movies=[Movie(**recommender.items[row]) for row in rows])


@router.get("/movies/{movie_id}", response_model=Movie)
async def get_movie(movie_id: int, recommender: RecommenderDep) -> Movie:
    (row,) = recommender.item_rows([movie_id])
    return Movie(**recommender.items[row])
