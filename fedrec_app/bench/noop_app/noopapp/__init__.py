"""noopapp: a Flower app whose rounds do no work (Flower's own per-round cost)."""
