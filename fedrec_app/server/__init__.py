"""The ServerApp's side (SuperLink host): the round loop, aggregation, the checkpoint keeper."""
