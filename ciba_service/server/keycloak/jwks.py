"""The realm's signing keys, for the channel bearer token (RS256 by default in Keycloak)."""

from __future__ import annotations

import threading
import time

import httpx
import jwt

__all__ = ["RealmKeys"]


class RealmKeys:
    """The realm's JWKS for the channel bearer token (RS256 by default in Keycloak)."""

    def __init__(self, uri: str, http: httpx.Client, *, min_refresh: float = 10.0) -> None:
        self._uri = uri
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = 0.0
        self._min_refresh = min_refresh
        self._lock = threading.Lock()

    def key(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            if kid not in self._keys and time.monotonic() - self._fetched > self._min_refresh:
                response = self._http.get(self._uri)
                response.raise_for_status()
                keys: dict[str, jwt.PyJWK] = {}
                for jwk in response.json().get("keys", []):
                    if jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                        continue
                    try:
                        keys[jwk["kid"]] = jwt.PyJWK(jwk)
                    except jwt.PyJWKError:
                        continue
                self._keys = keys
                self._fetched = time.monotonic()
            return self._keys.get(kid)
