"""POST /predict: predicted ratings of (user, movie) pairs, for evaluation and questions."""

from __future__ import annotations

from fastapi import APIRouter

from fedrec_app.gateway.deps import RecommenderDep
from fedrec_app.gateway.schemas import Prediction, PredictRequest, PredictResponse

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, recommender: RecommenderDep) -> PredictResponse:
    """Unrounded 1-5 ratings in request order; 404 naming every unknown user and movie id."""
    users = [p.user_id for p in body.pairs]
    movies = [p.movie_id for p in body.pairs]
    ratings = recommender.predict(users, movies).tolist()
    return PredictResponse(
        predictions=[
            Prediction(user_id=u, movie_id=m, predicted_rating=r)
            for u, m, r in zip(users, movies, ratings, strict=True)
        ]
    )
