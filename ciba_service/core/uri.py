"""URI normalisation (RFC 3986 sections 6.2.2 and 6.2.3), so that two spellings of one URI
compare equal: the resource server compares ``authorization_details`` locations with it, and
DPoP (RFC 9449 section 4.3 step 9) the proof's ``htu`` with the request URL."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["normalize_uri"]

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything a URI may carry literally (RFC 3986 2.2, 2.3) plus "%" (existing escapes stay).
_URI_SAFE = "!#$&'()*+,/:;=?@[]~-._%"


def _fix_escape(match: re.Match[str]) -> str:
    # 6.2.2.1: hex digits of escapes in upper case; 6.2.2.2: unreserved characters decoded.
    char = chr(int(match.group(1), 16))
    if (char.isalnum() and char.isascii()) or char in "-._~":
        return char
    return "%" + match.group(1).upper()


def _normalize_component(text: str) -> str:
    # IRI characters (RFC 3987 3.1) and characters a URI cannot hold are percent-encoded as
    # UTF-8 first, so "/ü" and "/%C3%BC" name the same resource.
    return _ESCAPE.sub(_fix_escape, quote(text, safe=_URI_SAFE))


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4
    output: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(output) > 1:
                output.pop()
        elif segment != ".":
            output.append(segment)
    result = "/".join(output)
    if path.endswith(("/.", "/..")):
        result += "/"
    return result or "/"


def normalize_uri(uri: str) -> str:
    """RFC 3986 6.2.2 syntax-based and 6.2.3 scheme-based normalisation: case of scheme and
    host, percent-encoding, dot segments, default port, empty path. The fragment is dropped.
    Locations (and DPoP ``htu``) are then compared exactly: no prefix matching, so
    ``https://h/a`` covers neither ``https://h/ab`` nor ``https://h/a/b``.

    Raises ``ValueError`` for a URI that cannot be parsed (a bad port, a broken IPv6 host).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    port = parts.port  # ValueError for a port that is not a number in range
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{_normalize_component(userinfo)}@{netloc}"
    path = _normalize_component(parts.path) or "/"
    query = _normalize_component(parts.query)
    return urlunsplit((scheme, netloc, _remove_dot_segments(path), query, ""))
