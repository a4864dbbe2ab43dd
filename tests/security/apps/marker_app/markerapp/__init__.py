"""markerapp: a ClientApp that leaves marker files wherever it runs (app approval tests)."""
