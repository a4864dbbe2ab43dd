"""The shared core: run-config, model, training, scoring, metrics, protocol, checkpoints."""
