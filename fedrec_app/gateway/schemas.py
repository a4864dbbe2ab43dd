"""Request and response models of the HTTP API (the seed's contract, extended)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

N_DEFAULT, N_MAX = 5, 20


class Movie(BaseModel):
    movie_id: int
    movie_title: str
    year: int | None
    genres: list[str]


class Recommendation(Movie):
    """One recommended movie. The list is ordered by ``match`` (the ranking head: how likely
    this user picks the movie); ``predicted_rating`` is the rating head's estimate of the stars
    they would give it once seen, so a lower one may follow a higher one."""

    predicted_rating: float = Field(
        ge=1, le=5, description="Rating head's estimate, 1-5 stars, rounded to 1 decimal"
    )
    match: int = Field(
        ge=0,
        le=100,
        description="Ranking score as 0-100 (100 * sigmoid(score), rounded): orders the list",
    )
    score: float = Field(description="Ranking score (the order of the list)")


class UserRecommendations(BaseModel):
    user_id: int
    recommendations: list[Recommendation]


class RecommendQuery(BaseModel):
    """Query parameters of GET /recommend."""

    user_id: int = Field(description="A user the checkpoint holds factors for")
    n: int = Field(N_DEFAULT, ge=1, le=N_MAX)
    genre: str | None = Field(None, description="Only movies of this genre")
    exclude: list[int] = Field([], description="Movie ids to leave out")


class Rating(BaseModel):
    model_config = ConfigDict(extra="forbid")
    movie_id: int
    rating: float = Field(ge=1, le=5)


class FoldInRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ratings: list[Rating] = Field(min_length=1, max_length=2_000)
    n: int = Field(N_DEFAULT, ge=1, le=N_MAX)
    genre: str | None = None


class FoldInRecommendations(BaseModel):
    rated: int = Field(description="How many ratings the recommendations were folded in from")
    recommendations: list[Recommendation]


class Pair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: int
    movie_id: int


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[Pair] = Field(min_length=1, max_length=10_000)


class Prediction(Pair):
    predicted_rating: float = Field(description="Rating head, 1-5, unrounded")


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class MovieList(BaseModel):
    movies: list[Movie]


class Health(BaseModel):
    status: str = "ok"


class Ready(BaseModel):
    status: str = "ready"
    run_id: str | None
    round: int
    created: str | None
    metrics: dict[str, Any]
    has_user_factors: bool
    has_rated_movies: bool = Field(
        description="The checkpoint says which movies each user rated: GET /recommend leaves "
        "them out"
    )
    num_items: int
    num_users: int


class ModelInfo(Ready):
    model: dict[str, Any]
    history: list[dict[str, Any]]
    genres: list[str]
