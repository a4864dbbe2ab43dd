// fedrec gateway page: plain JavaScript, no build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);
const myRatings = new Map(); // movie_id -> {movie, rating}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ------------------------------------------------------------------ API
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = sessionStorage.getItem("fedrec-api-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401) $("auth").hidden = false;
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `HTTP ${response.status}`;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

// ------------------------------------------------------------------ results
function stars(rating) {
  const full = Math.round(rating);
  return "★".repeat(full) + "☆".repeat(5 - full);
}

// The list is ordered by match (the ranking head: how likely you pick the movie); the stars are
// the rating head's estimate of what you would give it, so they need not fall down the list.
const ORDER_NOTE = "ordered by match; stars: your predicted rating";

function renderResults(list, recommendations) {
  list.replaceChildren();
  for (const rec of recommendations) {
    const genres = el("span", { class: "genres" },
      ...rec.genres.map((g) => el("span", { class: "chip" }, g)));
    list.append(el("li", { class: "result", "data-movie-id": String(rec.movie_id) },
      el("div", { class: "title" }, rec.movie_title,
        rec.year && !/\(\d{4}\)\s*$/.test(rec.movie_title)
          ? el("span", { class: "year" }, ` (${rec.year})`) : ""),
      genres,
      el("div", { class: "rating" },
        el("span", { class: "match", title: "match: how strongly the model picks this movie for you (orders the list)" },
          `${rec.match}% match`),
        el("span", { class: "stars", title: `predicted rating ${rec.predicted_rating.toFixed(1)} of 5` },
          stars(rec.predicted_rating)),
        el("span", { class: "value", title: "predicted rating" }, `${rec.predicted_rating.toFixed(1)} ★`))));
  }
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// ------------------------------------------------------------------ a known user
async function recommendForUser(event) {
  event.preventDefault();
  const status = $("user-status");
  const params = new URLSearchParams({ user_id: $("user-id").value, n: $("user-n").value });
  if ($("user-genre").value) params.set("genre", $("user-genre").value);
  setStatus(status, "…");
  try {
    const body = await api(`/recommend?${params}`);
    renderResults($("user-results"), body.recommendations);
    setStatus(status, body.recommendations.length
      ? `Top ${body.recommendations.length} for user ${body.user_id}, movies they rated left out; ${ORDER_NOTE}.`
      : "Nothing passes the rating threshold for this user.");
  } catch (err) {
    $("user-results").replaceChildren();
    setStatus(status, err.message, true);
  }
}

// ------------------------------------------------------------------ rate and fold in
let searchTimer = null;

function onSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, 200);
}

async function search() {
  const q = $("search").value.trim();
  const list = $("search-results");
  if (!q) { list.replaceChildren(); return; }
  try {
    const body = await api(`/movies?${new URLSearchParams({ q, limit: 8 })}`);
    list.replaceChildren(...body.movies.map(searchRow));
    if (!body.movies.length) list.append(el("li", { class: "empty" }, "No title matches."));
  } catch (err) {
    list.replaceChildren(el("li", { class: "empty error" }, err.message));
  }
}

function searchRow(movie) {
  const buttons = [1, 2, 3, 4, 5].map((r) => el("button", {
    type: "button", class: "rate-btn", "data-rating": String(r), title: `${r} star${r > 1 ? "s" : ""}`,
    "aria-pressed": "false", onclick: () => rate(movie, r),
  }, "★"));
  const row = el("li", { class: "search-row", "data-movie-id": String(movie.movie_id) },
    el("span", { class: "title" }, movie.movie_title), el("span", { class: "stars-input" }, ...buttons));
  showRating(row);
  return row;
}

// A search row's stars show the rating given to its movie (gold up to it), or none (grey).
function showRating(row) {
  const given = myRatings.get(Number(row.dataset.movieId));
  for (const button of row.querySelectorAll(".rate-btn")) {
    const on = given !== undefined && Number(button.dataset.rating) <= given.rating;
    button.classList.toggle("on", on);
    button.setAttribute("aria-pressed", String(given !== undefined && Number(button.dataset.rating) === given.rating));
  }
}

function rate(movie, rating) {
  myRatings.set(movie.movie_id, { movie, rating });
  renderMyRatings();
}

function renderMyRatings() {
  const list = $("my-ratings");
  list.replaceChildren();
  for (const [id, { movie, rating }] of myRatings) {
    list.append(el("li", {},
      el("span", { class: "title" }, movie.movie_title),
      el("span", { class: "stars" }, stars(rating)),
      el("button", { type: "button", class: "remove", title: "remove",
        onclick: () => { myRatings.delete(id); renderMyRatings(); } }, "×")));
  }
  if (!myRatings.size) list.append(el("li", { class: "empty" }, "No ratings yet."));
  for (const row of $("search-results").querySelectorAll(".search-row")) showRating(row);
  $("my-count").textContent = String(myRatings.size);
  $("me-go").disabled = myRatings.size === 0;
}

async function recommendForMe() {
  const status = $("me-status");
  const ratings = [...myRatings.values()].map(({ movie, rating }) => ({ movie_id: movie.movie_id, rating }));
  setStatus(status, "…");
  try {
    const body = await api("/recommend", { method: "POST", body: JSON.stringify({ ratings, n: 10 }) });
    renderResults($("me-results"), body.recommendations);
    setStatus(status, `From your ${body.rated} rating${body.rated > 1 ? "s" : ""}; ${ORDER_NOTE}.`);
  } catch (err) {
    $("me-results").replaceChildren();
    setStatus(status, err.message, true);
  }
}

// ------------------------------------------------------------------ training curve (inline SVG)
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function metricKey(history, pattern) {
  const keys = new Set(history.flatMap((h) => Object.keys(h)));
  return [...keys].find((k) => pattern.test(k)) || null;
}

// lines: [{label, cls, points: [[round, value], ...]}, ...]
function drawChart(container, lines, cssClass) {
  container.replaceChildren();
  lines = lines.filter((line) => line.points.length > 0);
  if (lines.length === 0) {
    container.append(el("p", { class: "empty" }, "No history in this checkpoint."));
    return;
  }
  const W = 420, H = 220, L = 52, R = 14, T = 14, B = 34;
  const all = lines.flatMap((line) => line.points);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const xMin = Math.min(...xs), xMax = Math.max(...xs);
  let yMin = Math.min(...ys), yMax = Math.max(...ys);
  const pad = (yMax - yMin) * 0.1 || Math.abs(yMax) * 0.05 || 0.01;
  yMin -= pad; yMax += pad;
  const sx = (x) => L + (xMax === xMin ? (W - L - R) / 2 : ((x - xMin) / (xMax - xMin)) * (W - L - R));
  const sy = (y) => T + (1 - (y - yMin) / (yMax - yMin)) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: `chart-svg ${cssClass}`, role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4;
    root.append(svg("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" }));
    root.append(svg("text", { x: L - 6, y: sy(y) + 4, class: "tick", "text-anchor": "end" }, y.toFixed(3)));
  }
  const step = Math.max(1, Math.ceil((xMax - xMin) / 8));
  for (let x = xMin; x <= xMax; x += step) {
    root.append(svg("text", { x: sx(x), y: H - B + 16, class: "tick", "text-anchor": "middle" }, String(x)));
  }
  root.append(svg("text", { x: (L + W - R) / 2, y: H - 4, class: "axis", "text-anchor": "middle" }, "round"));
  for (const { label, cls, points } of lines) {
    const path = points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    root.append(svg("path", { d: path, class: `line ${cls}` }));
    for (const [x, y] of points) {
      const dot = svg("circle", { cx: sx(x), cy: sy(y), r: 3.5, class: `dot ${cls}` });
      dot.append(svg("title", {}, `${label}, round ${x}: ${y.toFixed(4)}`));
      root.append(dot);
    }
  }
  container.append(root);
  container.append(el("p", { class: "legend" }, ...lines.map(({ label, cls }) =>
    el("span", { class: `key ${cls}` }, label))));
}

// The manifest's history holds the held-out test figures as plain keys (rmse, ndcg@10; or
// test_-prefixed) and the validation figures prefixed val_: both are drawn, each named.
const TEST_KEY = (metric) => new RegExp(`^(test[_.])?${metric}$`, "i");
const VAL_KEY = (metric) => new RegExp(`^val(idation)?[_.]${metric}$`, "i");

function drawCurves(history) {
  const series = (pattern) => {
    const key = metricKey(history, pattern);
    return key ? history.filter((h) => typeof h[key] === "number" && typeof h.round === "number")
      .map((h) => [h.round, h[key]]).sort((a, b) => a[0] - b[0]) : [];
  };
  for (const [metric, id, cls] of [["rmse", "chart-rmse", "rmse"], ["ndcg@10", "chart-ndcg", "ndcg"]]) {
    drawChart($(id), [
      { label: "test (held out)", cls: "test", points: series(TEST_KEY(metric)) },
      { label: "validation", cls: "val", points: series(VAL_KEY(metric)) },
    ], cls);
  }
}

// ------------------------------------------------------------------ start
async function loadModel() {
  try {
    const model = await api("/model");
    const m = model.metrics || {};
    const parts = [`run ${model.run_id ?? "?"}`, `round ${model.round}`];
    const rmse = metricKey([m], TEST_KEY("rmse")), ndcg = metricKey([m], TEST_KEY("ndcg@10"));
    if (rmse) parts.push(`test RMSE ${Number(m[rmse]).toFixed(3)}`);
    if (ndcg) parts.push(`NDCG@10 ${Number(m[ndcg]).toFixed(3)}`);
    $("model-badge").textContent = parts.join(" · ");
    for (const genre of model.genres) $("user-genre").append(el("option", { value: genre }, genre));
    if (!model.has_user_factors) {
      setStatus($("user-status"), "This checkpoint keeps user factors on the nodes: rate movies below instead.");
    }
    drawCurves(model.history || []);
  } catch (err) {
    $("model-badge").textContent = `model unavailable: ${err.message}`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("user-form").addEventListener("submit", recommendForUser);
  $("search").addEventListener("input", onSearch);
  $("me-go").addEventListener("click", recommendForMe);
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("fedrec-api-key", $("api-key").value.trim());
    $("auth").hidden = true;
    loadModel();
  });
  loadModel();
});
