"""Property-based fuzzing of the OpenAPI schema (schemathesis): no request gets a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (comes with schemathesis)
from schemathesis.checks import not_a_server_error  # noqa: E402
from signing_keys import verify_key_file  # noqa: E402

from fedrec_app.gateway.main import create_app  # noqa: E402
from fedrec_app.gateway.settings import GatewaySettings  # noqa: E402

EXAMPLES_PER_OPERATION = 40


def test_no_server_errors(checkpoint_dir) -> None:
    app = create_app(GatewaySettings(checkpoint=checkpoint_dir, verify_key=verify_key_file()))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/recommend", "/predict", "/movies"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
