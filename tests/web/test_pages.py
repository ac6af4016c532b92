"""The approval and enrollment pages' server side: the service's name and logo (configured,
validated, in the views), the pages' Content-Security-Policy with a logo, the static files
(strings in one catalog), and the type registry's page fields read from TOML."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ciba_service.config import load_settings
from ciba_service.web.approval import page_headers
from ciba_service.web.http import PAGE_HEADERS
from tests.support.service import Env, make_settings, open_env


@pytest.mark.parametrize(
    "url",
    ["", "https://brand.example.com/logo.svg", "https://cdn.example.com:8443/a/b.png?v=2", "/branding/logo.png"],
)
def test_logo_url_accepted(tmp_path: Path, url: str) -> None:
    assert load_settings(data_dir=tmp_path, logo_url=url).logo_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://brand.example.com/logo.svg",  # a network attacker could swap the picture
        "//brand.example.com/logo.svg",  # scheme-relative: whatever the page's scheme is
        "data:image/svg+xml,<svg/>",
        "javascript:alert(1)",
        "https://user:pw@brand.example.com/logo.svg",
        "https://brand.example.com/logo.svg#x",
        "https:///logo.svg",
        "logo.svg",
        "https://brand.example.com/a b.svg",
        "https://brand.example.com/a'b.svg",
    ],
)
def test_logo_url_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="logo_url"):
        load_settings(data_dir=tmp_path, logo_url=url)


def test_page_csp_adds_exactly_the_logo_origin() -> None:
    assert page_headers("") == PAGE_HEADERS
    assert page_headers("/branding/logo.png") == PAGE_HEADERS  # 'self' covers it
    csp = page_headers("https://CDN.example.com:8443/logo.png")["Content-Security-Policy"]
    assert csp == PAGE_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self'", "img-src 'self' https://cdn.example.com:8443"
    )
    assert "default-src 'none'" in csp
    assert "script-src 'self';" in csp


def test_views_name_the_service(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, display_name="Example Bank", logo_url="https://brand.example.com/l.svg")
    with open_env(settings, username=None) as env:
        _, link = env.provider.add_user(username="dora", display_name="Dora Example")
        token = link.rsplit("/", 1)[1]
        assert env.client.get(f"/enroll/{token}/details").json() == {
            "username": "dora",
            "display_name": "Dora Example",
            "service": {"display_name": "Example Bank", "logo_url": "https://brand.example.com/l.svg"},
        }
        page = env.client.get(f"/enroll/{token}")
        assert "img-src 'self' https://brand.example.com;" in page.headers["content-security-policy"]


def test_display_name_defaults_to_rp_name(env: Env) -> None:
    assert env.settings.display_name == ""
    _, link = env.provider.add_user(username="erin")
    view = env.client.get(f"/enroll/{link.rsplit('/', 1)[1]}/details").json()
    assert view["service"] == {"display_name": "CIBA approvals", "logo_url": ""}


def test_strings_are_served_from_one_catalog(env: Env) -> None:
    strings = env.client.get("/static/strings.js")
    assert strings.status_code == 200
    assert strings.headers["content-type"].startswith("text/javascript")
    assert '"approve.code_heading": "Check this code matches your agent"' in strings.text
    for name in ("approve.js", "enroll.js", "page.js"):
        script = env.client.get(f"/static/{name}").text
        # the scripts say nothing to the user in English of their own: every sentence is t("…")
        assert 'setStatus("' not in script, name
    page = env.client.get("/enroll/x").text
    assert page.index("/static/strings.js") < page.index("/static/enroll.js")


def test_type_page_fields_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "ciba.toml"
    config.write_text(
        """
[authorization_details_types.db_migration]
description = "Run a database migration"
template = "{actions} migration {identifier} on {database}"
actions = ["apply", "rollback", "drop"]
fields = { database = "string" }
labels = { identifier = "Migration", database = "Database" }
critical = ["database", "identifier"]
destructive_actions = ["drop"]
""",
        encoding="utf-8",
    )
    spec = load_settings(config, data_dir=tmp_path).authorization_details_types["db_migration"]
    assert spec.labels == {"identifier": "Migration", "database": "Database"}
    assert spec.critical == ["database", "identifier"]
    assert spec.destructive_actions == ["drop"]
    config.write_text(config.read_text().replace('destructive_actions = ["drop"]', 'destructive_actions = ["wipe"]'))
    with pytest.raises(ValidationError, match="destructive_actions"):
        load_settings(config, data_dir=tmp_path)
