"""Operations: /healthz (open), /readyz, /model (manifest summary) and /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fedrec_app.gateway.deps import RecommenderDep
from fedrec_app.gateway.recommender import Recommender
from fedrec_app.gateway.schemas import Health, ModelInfo, Ready

open_router = APIRouter(tags=["ops"])
router = APIRouter(tags=["ops"])


@open_router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (no authentication)."""
    return Health()


@router.get("/readyz", response_model=Ready)
async def readyz(recommender: RecommenderDep) -> Ready:
    """A verified checkpoint is loaded: which one, and its metrics."""
    return Ready(**_summary(recommender))


@router.get("/model", response_model=ModelInfo)
async def model_info(recommender: RecommenderDep) -> ModelInfo:
    """The served checkpoint's manifest: model, metrics and the per-round history."""
    manifest = recommender.manifest
    return ModelInfo(
        **_summary(recommender),
        model=manifest.get("model") or {},
        history=manifest.get("history") or [],
        genres=list(recommender.genres),
    )


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


def _summary(recommender: Recommender) -> dict[str, Any]:
    manifest = recommender.manifest
    return {
        "run_id": None if manifest.get("run_id") is None else str(manifest["run_id"]),
        "round": int(manifest["round"]),
        "created": manifest.get("created"),
        "metrics": manifest.get("metrics") or {},
        "has_user_factors": recommender.has_user_factors,
        "has_rated_movies": recommender.has_rated_movies,
        "num_items": recommender.num_items,
        "num_users": len(recommender.user_ids),
    }
