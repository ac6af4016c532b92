"""/metrics: requests by endpoint and outcome, latency, pending requests, decisions, deliveries,
store errors; never an approval id or enrollment token in a label."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ciba_service.store import StoreUnavailable
from tests.support.service import Env


def samples(env: Env) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = env.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_and_oauth_outcome(env: Env) -> None:
    accepted = env.bc_authorize()
    assert accepted.status_code == 200
    assert env.bc_authorize(login_hint="nobody").status_code == 400
    auth_req_id = accepted.json()["auth_req_id"]
    assert env.token(auth_req_id).json()["error"] == "authorization_pending"
    found = samples(env)
    assert value(found, "ciba_http_requests_total", endpoint="/bc-authorize", outcome="200") == 1
    assert value(found, "ciba_http_requests_total", endpoint="/bc-authorize", outcome="unknown_user_id") == 1
    assert value(found, "ciba_http_requests_total", endpoint="/token", outcome="authorization_pending") == 1
    assert value(found, "ciba_http_request_duration_seconds_count", endpoint="/bc-authorize") == 2
    assert value(found, "ciba_pending_requests") == 1


def test_decisions_and_pending_gauge(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    denied = env.request_for(env.bc_authorize().json()["auth_req_id"])
    assert env.client.post(f"/approve/{denied.approval_id}/deny", json={}).status_code == 200
    found = samples(env)
    assert value(found, "ciba_decisions_total", outcome="approved") == 1
    assert value(found, "ciba_decisions_total", outcome="denied") == 1
    assert value(found, "ciba_pending_requests") == 0


def test_labels_never_hold_approval_ids(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    approval_id = env.request_for(auth_req_id).approval_id
    assert env.client.get(f"/approve/{approval_id}/details").status_code == 200
    assert env.client.get("/approve/not-a-real-id/details").status_code == 404
    text = env.client.get("/metrics").text
    assert approval_id not in text and "not-a-real-id" not in text and auth_req_id not in text
    found = samples(env)
    assert value(found, "ciba_http_requests_total", endpoint="/approve/{approval_id}/details", outcome="200") == 1
    assert value(found, "ciba_http_requests_total", endpoint="/approve/{approval_id}/details", outcome="not_found") == 1


def test_store_failures_are_counted(env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def down(*_: object, **__: object) -> None:
        raise StoreUnavailable("test: the store is down")

    monkeypatch.setattr(env.provider.store, "add_request", down)
    refused = env.bc_authorize()
    assert refused.status_code == 503
    monkeypatch.setattr(env.provider.store, "count_pending", down)
    found = samples(env)  # the scrape still answers without the gauge
    assert value(found, "ciba_store_unavailable_total") == 1
    assert value(found, "ciba_http_requests_total", endpoint="/bc-authorize", outcome="temporarily_unavailable") == 1
    assert ("ciba_pending_requests", ()) not in found
