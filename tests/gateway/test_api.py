"""Contract tests of the HTTP API over real HTTP (a `fedrec gateway` subprocess)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedrec_app.core import scoring
from fedrec_app.core.checkpoint import read_checkpoint
from fedrec_app.core.rated import rated_lists
from fedrec_app.data.catalogue import movie_year


@pytest.fixture(scope="module")
def ckpt(checkpoint_dir: Path):
    return read_checkpoint(checkpoint_dir)


@pytest.fixture(scope="module")
def client(gateway):
    with gateway.client() as c:
        yield c


def expected_top(ckpt, user_id: int, n: int, min_rating: float = 2.0) -> list[int]:
    """Movie ids the contract asks for, computed from the checkpoint's arrays directly: by
    ranking score, predicted rating >= ``min_rating``, never a movie the user rated."""
    a = ckpt.arrays
    row = int(np.flatnonzero(a["user_ids"] == user_id)[0])
    scores = scoring.ranking_scores(a, a["user_rank_embedding"][row])
    ratings = scoring.predict_ratings(a, a["user_embedding"][row], a["user_bias"][row])
    rated = set(rated_lists(a)[row].tolist())
    order = [i for i in np.argsort(-scores, kind="stable") if ratings[i] >= min_rating]
    movies = [int(ckpt.catalogue.movie_ids[i]) for i in order]
    return [m for m in movies if m not in rated][:n]


def test_seed_example_request(client, ckpt) -> None:
    response = client.get("/recommend", params={"user_id": 4, "n": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == 4
    recs = body["recommendations"]
    assert [r["movie_id"] for r in recs] == expected_top(ckpt, 4, 5)
    cat = ckpt.catalogue
    for rec in recs:
        row = cat.index_of(rec["movie_id"])
        assert rec["movie_title"] == cat.titles[row]
        assert rec["year"] == movie_year(cat.titles[row], cat.years[row])
        assert rec["genres"] == list(cat.genres[row])
        assert 2.0 <= rec["predicted_rating"] <= 5.0
        assert rec["predicted_rating"] == round(rec["predicted_rating"], 1)
    scores = [r["score"] for r in recs]
    assert scores == sorted(scores, reverse=True)
    matches = [r["match"] for r in recs]  # the order, as 0-100, beside the predicted stars
    assert matches == sorted(matches, reverse=True) and all(0 <= m <= 100 for m in matches)
    assert matches == [round(100 / (1 + np.exp(-s))) for s in scores]


def test_no_user_is_recommended_a_movie_they_rated(client, ckpt) -> None:
    rated = rated_lists(ckpt.arrays)
    assert client.get("/readyz").json()["has_rated_movies"] is True
    for row, user_id in enumerate(ckpt.arrays["user_ids"].tolist()):
        recs = client.get("/recommend", params={"user_id": user_id, "n": 20}).json()
        ids = {r["movie_id"] for r in recs["recommendations"]}
        assert ids and not ids & set(rated[row].tolist()), user_id
    # the checkpoint's rated movies include each user's two best-scored: they would be first
    a = ckpt.arrays
    row = int(np.flatnonzero(a["user_ids"] == 4)[0])
    best = np.argsort(-scoring.ranking_scores(a, a["user_rank_embedding"][row]))[0]
    assert int(ckpt.catalogue.movie_ids[best]) in rated[row].tolist()


def test_a_checkpoint_without_rated_movies_still_serves(
    checkpoint_factory, gateway_factory, tmp_path
) -> None:
    folder = checkpoint_factory(tmp_path / "final", rated=False)
    gateway = gateway_factory(folder)
    with gateway.client() as client:
        assert client.get("/readyz").json()["has_rated_movies"] is False
        recs = client.get("/recommend", params={"user_id": 4}).json()["recommendations"]
        assert len(recs) == 5
    assert "not the movies each user rated" in gateway.log_text()


def test_n_defaults_to_5_and_allows_20(client, ckpt) -> None:
    assert len(client.get("/recommend", params={"user_id": 7}).json()["recommendations"]) == 5
    recs = client.get("/recommend", params={"user_id": 7, "n": 20}).json()["recommendations"]
    assert [r["movie_id"] for r in recs] == expected_top(ckpt, 7, 20)


def test_genre_filter_and_exclude(client, ckpt) -> None:
    top = expected_top(ckpt, 3, 3)
    recs = client.get("/recommend", params={"user_id": 3, "n": 5, "exclude": top[:2]}).json()[
        "recommendations"
    ]
    ids = [r["movie_id"] for r in recs]
    assert not set(top[:2]) & set(ids) and ids[0] == top[2]
    recs = client.get("/recommend", params={"user_id": 3, "genre": "Drama", "n": 20}).json()
    assert recs["recommendations"] and all("Drama" in r["genres"] for r in recs["recommendations"])


@pytest.mark.parametrize(
    ("params", "status", "mentions"),
    [
        ({"user_id": 999}, 404, "999"),
        ({"user_id": 4, "n": 0}, 422, "n"),
        ({"user_id": 4, "n": 21}, 422, "n"),
        ({"user_id": "abc"}, 422, "user_id"),
        ({"user_id": "4.5"}, 422, "user_id"),
        ({}, 422, "user_id"),
        ({"user_id": 4, "genre": "Space Opera"}, 422, "Space Opera"),
        ({"user_id": 4, "exclude": 2}, 404, "2"),
    ],
)
def test_recommend_errors_are_json(client, params, status, mentions) -> None:
    response = client.get("/recommend", params=params)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert mentions in response.json()["detail"]


def test_post_recommend_new_user(client, ckpt) -> None:
    ratings = [
        {"movie_id": 1, "rating": 5},
        {"movie_id": 5, "rating": 4.5},
        {"movie_id": 9, "rating": 1},
    ]
    response = client.post("/recommend", json={"ratings": ratings, "n": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["rated"] == 3
    ids = [r["movie_id"] for r in body["recommendations"]]
    assert len(ids) == len(set(ids)) > 0
    assert not {1, 5, 9} & set(ids)
    assert all(i in ckpt.catalogue for i in ids)


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"ratings": [{"movie_id": 1, "rating": 6}]}, 422, "rating"),
        ({"ratings": [{"movie_id": 1, "rating": 0.5}]}, 422, "rating"),
        ({"ratings": []}, 422, "ratings"),
        ({"ratings": [{"movie_id": 2, "rating": 4}, {"movie_id": 4, "rating": 3}]}, 404, "2, 4"),
        ({"ratings": [{"movie_id": 1, "rating": 4}, {"movie_id": 1, "rating": 3}]}, 422, "[1]"),
        ({"ratings": [{"movie_id": "x", "rating": 4}]}, 422, "movie_id"),
        ({"ratings": [{"movie_id": 1, "rating": 4}], "n": 50}, 422, "n"),
    ],
)
def test_post_recommend_errors(client, body, status, mentions) -> None:
    response = client.post("/recommend", json=body)
    assert response.status_code == status
    assert mentions in response.json()["detail"]


def test_predict_matches_checkpoint_numbers(client, ckpt) -> None:
    a, cat = ckpt.arrays, ckpt.catalogue
    pairs = [(u, int(m)) for u in (1, 4, 25) for m in cat.movie_ids[::7]]
    response = client.post(
        "/predict", json={"pairs": [{"user_id": u, "movie_id": m} for u, m in pairs]}
    )
    assert response.status_code == 200
    got = response.json()["predictions"]
    assert [(p["user_id"], p["movie_id"]) for p in got] == pairs
    for p in got:
        row = p["user_id"] - 1  # user ids are 1..U in the test checkpoint
        want = scoring.predict_ratings(
            a, a["user_embedding"][row], a["user_bias"][row], [cat.index_of(p["movie_id"])]
        )[0]
        assert p["predicted_rating"] == pytest.approx(float(want), abs=1e-5)


@pytest.mark.parametrize(
    ("pairs", "status", "mentions"),
    [
        ([{"user_id": 1, "movie_id": 1}, {"user_id": 77, "movie_id": 1}], 404, "user id: 77"),
        ([{"user_id": 1, "movie_id": 2}], 404, "movie id: 2"),
        ([], 422, "pairs"),
        ([{"user_id": 1, "movie_id": 1}] * 10_001, 422, "pairs"),
    ],
)
def test_predict_errors(client, pairs, status, mentions) -> None:
    response = client.post("/predict", json={"pairs": pairs})
    assert response.status_code == status
    assert mentions in response.json()["detail"]


def test_predict_names_every_unknown_id(client) -> None:
    pairs = [
        {"user_id": 1, "movie_id": 1},
        {"user_id": 99999, "movie_id": 1},
        {"user_id": 1, "movie_id": 88888},
        {"user_id": 99999, "movie_id": 88888},
    ]
    response = client.post("/predict", json={"pairs": pairs})
    assert response.status_code == 404
    body = response.json()
    assert "unknown user id: 99999" in body["detail"]
    assert "unknown movie id: 88888" in body["detail"]
    assert (body["unknown_user_ids"], body["unknown_movie_ids"]) == ([99999], [88888])


def test_recommend_names_unknown_user_and_exclude_ids(client) -> None:
    response = client.get("/recommend", params={"user_id": 999, "exclude": [2, 1, 4]})
    assert response.status_code == 404
    body = response.json()
    assert body["detail"] == "unknown user id: 999; unknown movie ids: 2, 4"
    assert (body["unknown_user_ids"], body["unknown_movie_ids"]) == ([999], [2, 4])


def test_unknown_genre_is_422_on_movies_as_on_recommend(client) -> None:
    known = client.get("/model").json()["genres"]
    movies = client.get("/movies", params={"genre": "Scifi"})
    recommend = client.get("/recommend", params={"user_id": 4, "genre": "Scifi"})
    folded = client.post(
        "/recommend", json={"ratings": [{"movie_id": 1, "rating": 5}], "genre": "Scifi"}
    )
    for response in (movies, recommend, folded):
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {
            "detail": f"genre: unknown genre 'Scifi'; one of {', '.join(known)}",
            "known_genres": known,
        }
    assert client.get("/movies", params={"genre": "Drama"}).status_code == 200


def test_recommend_response_fields_unchanged(client) -> None:
    body = client.get("/recommend", params={"user_id": 4, "n": 5}).json()
    assert set(body) == {"user_id", "recommendations"}
    assert len(body["recommendations"]) == 5
    for rec in body["recommendations"]:
        assert set(rec) == {
            "movie_id",
            "movie_title",
            "predicted_rating",
            "year",
            "genres",
            "match",
            "score",
        }


def test_predict_accepts_10000_pairs(client) -> None:
    pairs = [{"user_id": 1 + i % 25, "movie_id": 1 + 2 * (i % 40)} for i in range(10_000)]
    response = client.post("/predict", json={"pairs": pairs})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 10_000


def test_movies_search_and_lookup(client, ckpt) -> None:
    body = client.get("/movies", params={"q": "test movie 1", "limit": 5}).json()
    titles = [m["movie_title"] for m in body["movies"]]
    assert 0 < len(titles) <= 5 and all("test movie 1" in t.lower() for t in titles)
    drama = client.get("/movies", params={"genre": "Drama", "limit": 200}).json()["movies"]
    assert {m["movie_id"] for m in drama} == {
        int(m)
        for m, g in zip(ckpt.catalogue.movie_ids, ckpt.catalogue.genres, strict=True)
        if "Drama" in g
    }
    movie = client.get("/movies/3").json()
    assert ckpt.catalogue.years[1] is None  # items.csv has no year; the title has (1973)
    assert movie == {
        "movie_id": 3,
        "movie_title": ckpt.catalogue.titles[1],
        "year": 1973,
        "genres": list(ckpt.catalogue.genres[1]),
    }
    missing = client.get("/movies/4")
    assert missing.status_code == 404 and "4" in missing.json()["detail"]
    assert client.get("/movies/abc").status_code == 422


def test_health_ready_model_metrics(client, ckpt) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["run_id"] == "test-run" and ready["round"] == ckpt.round
    assert ready["metrics"] == ckpt.manifest["metrics"]
    assert ready["has_user_factors"] is True and ready["num_users"] == 25
    model = client.get("/model").json()
    assert model["history"] == ckpt.manifest["history"]
    client.get("/recommend", params={"user_id": 999})
    text = client.get("/metrics").text
    assert 'fedrec_gateway_requests_total{method="GET",route="/recommend",status="404"}' in text
    assert 'fedrec_gateway_errors_total{kind="client",route="/recommend"}' in text
    assert "fedrec_gateway_request_duration_seconds_bucket" in text
    assert f'fedrec_gateway_model_round{{run_id="test-run"}} {float(ckpt.round)}' in text


def test_errors_are_json_and_bodies_limited(client, gateway) -> None:
    unknown = client.get("/no/such/path")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    bad_json = client.post(
        "/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 422 and "detail" in bad_json.json()
    too_big = client.post(
        "/predict", content=b" " * (2 << 20), headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413 and "too large" in too_big.json()["detail"]
    wrong_method = client.delete("/recommend")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()
    # one log line per request, with its latency
    assert re.search(r'"GET /no/such/path" 404 \d+B \d+\.\d+ms', gateway.log_text())
    assert "Traceback" not in unknown.text + bad_json.text + too_big.text


def test_page_and_static_files(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "fedrec" in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert "Content-Security-Policy" in page.text  # the page's own CSP (meta tag)
    assert client.get("/static/app.js").status_code == 200
    assert 'href="/docs"' in page.text  # docs are served here (no API keys): linked


def test_docs_are_served_from_local_files(client) -> None:
    """/docs loads Swagger UI from the gateway itself, never a CDN; /redoc is not served."""
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(urls) == 3 and all(u.startswith("/docs-assets/") for u in urls), urls
    assert "cdn" not in page.text.lower() and "http" not in page.text.lower()
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert client.get("/redoc").status_code == 404
    assert (
        "access-control-allow-origin"
        not in client.get("/readyz", headers={"Origin": "http://evil.example"}).headers
    )


def test_checkpoint_without_user_factors(checkpoint_factory, gateway_factory, tmp_path) -> None:
    folder = checkpoint_factory(tmp_path / "final", user_factors=False)
    gw = gateway_factory(folder)
    with gw.client() as client:
        missing = client.get("/recommend", params={"user_id": 4})
        assert missing.status_code == 404 and "POST /recommend" in missing.json()["detail"]
        folded = client.post("/recommend", json={"ratings": [{"movie_id": 1, "rating": 5}]})
        assert folded.status_code == 200 and folded.json()["recommendations"]
        assert client.get("/readyz").json()["has_user_factors"] is False


def test_chunked_body_over_limit_is_refused(client) -> None:
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_min_rating_is_configurable(checkpoint_dir, gateway_factory) -> None:
    gw = gateway_factory(checkpoint_dir, "--min-rating", "3.5")
    with gw.client() as client:
        for user_id in (1, 2, 3):
            recs = client.get("/recommend", params={"user_id": user_id, "n": 20}).json()
            assert all(r["predicted_rating"] >= 3.5 for r in recs["recommendations"])
