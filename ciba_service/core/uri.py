"""URI normalisation (RFC 3986 sections 6.2.2 and 6.2.3), so that two spellings of one URI
compare equal: the resource server compares ``authorization_details`` locations with it, and
DPoP (RFC 9449 section 4.3 step 9) the proof's ``htu`` with the request URL.

Strict: a string that is not a valid absolute URI raises ``ValueError`` rather than being
cleaned up into one. ``urllib.parse.urlsplit`` silently deletes TAB, CR and LF anywhere and
strips leading and trailing spaces and control characters, so ``"https://iam.exa\\tmple.test/"``
would otherwise normalise to ``https://iam.example.test/`` and match an approval for that
host: a location the user never saw would be covered.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["normalize_uri"]

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything a URI may carry literally (RFC 3986 2.2, 2.3) plus "%" (existing escapes stay).
_URI_SAFE = "!#$&'()*+,/:;=?@[]~-._%"
# RFC 3986 3.1 scheme; 3.2.2 reg-name and 3.2.1 userinfo (unreserved, pct-encoded, sub-delims).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*", re.ASCII)
_REG_NAME = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})+", re.ASCII)
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*", re.ASCII)
# ASCII a URI never holds literally: controls, space, DEL, and the backslash (which WHATWG
# parsers read as "/" in http(s) URIs: "https://a.test\\@b.test/" is a.test to a browser and
# b.test to urlsplit, a parser differential).
_ASCII_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")


def _check_characters(uri: str) -> None:
    if _ASCII_FORBIDDEN.search(uri):
        raise ValueError("URI contains whitespace, a control character or a backslash")
    if not uri.isascii():
        # IRI characters are allowed (and percent-encoded below), but not Unicode controls,
        # format characters (bidi overrides), separators, surrogates, private-use or unassigned
        # code points: they would be invisible or ambiguous on the approval page.
        for char in uri:
            if unicodedata.category(char)[0] in "CZ":
                raise ValueError(f"URI contains the character U+{ord(char):04X}")
    if _BAD_ESCAPE.search(uri):
        raise ValueError("URI contains a malformed percent-escape")


def _check_authority(scheme: str, netloc: str, hostname: str | None) -> None:
    userinfo, at, hostport = netloc.rpartition("@")
    if at and not _USERINFO.fullmatch(userinfo):
        raise ValueError("URI userinfo contains characters RFC 3986 does not allow")
    if hostport.startswith("["):
        try:
            ipaddress.IPv6Address(hostname or "")
        except ValueError:
            raise ValueError("URI host is not a valid IPv6 literal") from None
    elif hostname and not _REG_NAME.fullmatch(hostname):
        # ASCII only: an internationalised host is written as its A-labels (xn--...), so one
        # host has one spelling here.
        raise ValueError("URI host contains characters RFC 3986 does not allow")
    if scheme in _DEFAULT_PORTS and not hostname:
        # RFC 9110 4.2.1/4.2.2: an http(s) URI with an empty host is invalid.
        raise ValueError("http(s) URI without a host")


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

    Raises ``ValueError`` for anything that is not a valid absolute URI: no scheme; a bad
    port; a broken IPv6 host; whitespace, control or format characters or a backslash
    anywhere; a malformed percent-escape; a host or userinfo with characters RFC 3986 does not
    allow (non-ASCII hosts included: write them as A-labels); an http(s) URI without a host.
    Nothing is silently removed.
    """
    _check_characters(uri)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        raise ValueError("not an absolute URI (no scheme)")
    port = parts.port  # ValueError for a port that is not a number in range
    _check_authority(scheme, parts.netloc, parts.hostname)
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
