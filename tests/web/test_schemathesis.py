"""Property-based API testing with schemathesis against the service's own OpenAPI document:
no input, however malformed, may produce a 5xx or a response that contradicts the schema."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
)

from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from tests.support.service import make_settings

_provider = build_provider(make_settings(Path(tempfile.mkdtemp(prefix="ciba-st-"))))
_provider.sweep_interval = 0
_provider.add_user(username="alice")
app = create_app(_provider)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_schema_conformance(case: schemathesis.Case) -> None:
    # response_headers_conformance: every 401 must carry its documented WWW-Authenticate (RFC 9110 11.6.1)
    case.call_and_validate(
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]
    )
