"""What travels between the ServerApp and the ClientApps: packed array records, error codes."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedrec_app.core import protocol


def test_a_record_carries_named_arrays_in_one_flower_array(rng: np.random.Generator) -> None:
    arrays = {
        "item_embedding": rng.standard_normal((7, 3)).astype(np.float32),
        "global_bias": np.asarray(3.5, np.float32),
        "counts": np.arange(7, dtype=np.int64),
    }
    record = protocol.to_record(arrays)
    assert list(record.keys()) == [protocol.PACKED]
    back = protocol.from_record(record)
    assert sorted(back) == sorted(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)


@pytest.mark.parametrize(
    ("record", "says"),
    [
        (ArrayRecord({"item_bias": Array(np.zeros(3, np.float32))}), "expected one array 'npz'"),
        (ArrayRecord({"npz": Array(np.zeros(8, np.uint8))}), "not an .npz archive"),
        (ArrayRecord({"npz": Array(np.frombuffer(b"PK\x03\x04broken", np.uint8))}), "not an .npz"),
    ],
)
def test_anything_else_is_refused(record: ArrayRecord, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        protocol.from_record(record)


def test_error_reasons_are_known_codes() -> None:
    assert protocol.error_reason("stale") == "fedrec:stale"
    with pytest.raises(ValueError, match="unknown error code"):
        protocol.error_reason("no-such-code")
