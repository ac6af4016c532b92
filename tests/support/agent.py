"""Builders for agent-side tests: an httpx transport into the service's test client."""

from __future__ import annotations

import httpx

from tests.support.service import Env


class ThroughTestClient(httpx.BaseTransport):
    """httpx requests answered by the service's test client (which may speak another httpx:
    Starlette's test client prefers the httpx2 fork when it is installed)."""

    def __init__(self, env: Env) -> None:
        self.env = env

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.env.client.request(
            request.method, str(request.url), headers=dict(request.headers), content=request.read()
        )
        return httpx.Response(answer.status_code, headers=dict(answer.headers), content=answer.content)
