"""The seed's approach, for comparison: load the Keras model file, call ``predict`` per request.

`python -m fedrec_app.bench.reference --checkpoint DIR --port P` serves ``GET /recommend`` and
``GET /healthz`` like the seed did: every request scores all items with ``model.predict``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException

from fedrec_app.core.checkpoint import MODEL, read_checkpoint
from fedrec_app.core.errors import FedrecError


def create_reference_app(checkpoint: Path, min_rating: float = 2.0) -> FastAPI:
    import keras

    import fedrec_app.core.model  # noqa: F401  (registers FedRecModel for load_model)

    ckpt = read_checkpoint(checkpoint)
    if not (ckpt.path / MODEL).is_file():
        raise FedrecError(f"{ckpt.path / MODEL}: missing; the reference needs the Keras file")
    if not ckpt.has_user_factors:
        raise FedrecError(f"{ckpt.path}: no user factors; GET /recommend needs them")
    model = keras.models.load_model(ckpt.path / MODEL)
    user_rows = {int(u): r for r, u in enumerate(ckpt.arrays["user_ids"])}
    items = np.arange(len(ckpt.catalogue))
    cat = ckpt.catalogue
    app = FastAPI(title="seed-style reference")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/recommend")
    def recommend(user_id: int, n: int = 5) -> dict[str, Any]:
        if user_id not in user_rows:
            raise HTTPException(404, f"unknown user id: {user_id}")
        out = model.predict(
            {
                "user": np.full(len(items), user_rows[user_id]),
                "item": items,
                "negatives": items[:, None],
            },
            batch_size=len(items),
            verbose=0,
        )
        ratings = np.asarray(out["rating"]).reshape(-1)
        scores = np.asarray(out["rank"])[:, 0]
        top = [i for i in np.argsort(-scores) if ratings[i] >= min_rating][:n]
        return {
            "user_id": user_id,
            "recommendations": [
                {
                    "movie_id": int(cat.movie_ids[i]),
                    "movie_title": cat.titles[i],
                    "predicted_rating": round(float(ratings[i]), 1),
                }
                for i in top
            ],
        }

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = create_reference_app(args.checkpoint)
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
