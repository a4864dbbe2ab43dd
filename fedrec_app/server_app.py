"""Flower ServerApp (thin): set up the run, run the rounds (``strategy``), keep checkpoints.

Runs on the SuperLink host with the SuperLink's working directory: ``checkpoint-dir`` must be an
absolute path. Checkpoints go to ``<checkpoint-dir>/<run-id>/``, each signed with the
federation's key ``signing-key`` (an absolute path too); a run without a usable key fails before
the first round.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrec_app.core.app_logging import log_to_stderr
from fedrec_app.core.config import ConfigError, RunConfig, parse_run_config
from fedrec_app.core.errors import FedrecError

log = logging.getLogger("fedrec_app.server_app")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    log_to_stderr()
    try:
        cfg = parse_run_config(context.run_config)
        final = run(grid, cfg, context.run_id)
    except Exception as exc:  # the run fails either way: say so in `flwr log`, in one line
        log.error("run %s FAILED: %s", context.run_id, exc)
        raise
    log.info("run %s completed: final checkpoint %s", context.run_id, final)


def run(grid: Grid, cfg: RunConfig, run_id: int) -> Path | None:
    """The whole run; returns the ``final/`` checkpoint folder (None if no round finished)."""
    from fedrec_app.core.signing import load_signing_key
    from fedrec_app.core.training import init_item_arrays
    from fedrec_app.data.catalogue import read_catalogue_csv
    from fedrec_app.server.keeper import CheckpointKeeper, resume_point
    from fedrec_app.server.strategy import FederationLoop

    if not cfg.checkpoint_dir or not Path(cfg.checkpoint_dir).is_absolute():
        raise ConfigError(
            f"run-config 'checkpoint-dir' must be an absolute path on the SuperLink host, "
            f"got {cfg.checkpoint_dir!r}"
        )
    if not cfg.signing_key or not Path(cfg.signing_key).is_absolute():
        raise ConfigError(
            f"run-config 'signing-key' must be the absolute path of the federation's signing key "
            f"on the SuperLink host (checkpoints are never written unsigned), "
            f"got {cfg.signing_key!r}"
        )
    try:
        signing_key = load_signing_key(Path(cfg.signing_key))
    except FedrecError as exc:
        raise ConfigError(f"run-config 'signing-key': {exc}") from None
    catalogue_path = cfg.catalogue_path()
    if catalogue_path is None:
        raise ConfigError("run-config 'catalogue' (or 'partition-set') must name the items.csv")
    catalogue = read_catalogue_csv(catalogue_path)
    start = resume_point(cfg, catalogue, signing_key.public_key())
    if start is None:
        shared = init_item_arrays(len(catalogue), cfg.train_config())
        users, first, history, state_key = None, 0, [], str(run_id)
    else:
        log.info("resuming from %s (round %d)", start.source, start.round)
        shared, users, first = start.shared, start.users, start.round
        history, state_key = start.history, start.state_key
    keeper = CheckpointKeeper(
        run_dir=Path(cfg.checkpoint_dir) / str(run_id),
        run_id=run_id,
        cfg=cfg,
        catalogue=catalogue,
        state_key=state_key,
        signing_key=signing_key,
        history=history,
        resumed_from=start.source if start else "",
    )
    log.info(
        "run %s: %d rounds from round %d, %d items, min-nodes=%d, checkpoints in %s",
        run_id,
        cfg.num_server_rounds,
        first,
        len(catalogue),
        cfg.min_nodes,
        keeper.run_dir,
    )
    loop = FederationLoop(
        grid=grid,
        cfg=cfg,
        state_key=state_key,
        catalogue_fingerprint=catalogue.fingerprint,
        on_trained=keeper.trained,
        on_evaluated=keeper.evaluated,
    )
    loop.run(shared, users, first)
    return keeper.finish()
