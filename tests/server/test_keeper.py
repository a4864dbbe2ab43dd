"""Which checkpoint is best."""

import math

from fedrec_app.server.keeper import is_better


def test_is_better_respects_direction() -> None:
    assert is_better("rmse", 0.9, None) and is_better("rmse", 0.9, 0.95)
    assert not is_better("rmse", 0.96, 0.95)
    assert is_better("ndcg@10", 0.4, 0.3) and not is_better("ndcg@10", 0.2, 0.3)
    assert not is_better("rmse", math.nan, None)
