"""Dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fedrec_app.gateway.recommender import Recommender
from fedrec_app.gateway.settings import GatewaySettings


async def get_recommender(request: Request) -> Recommender:
    """The model being served now (one read: a reload never changes it mid-request)."""
    recommender: Recommender = request.app.state.store.current
    return recommender


async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
