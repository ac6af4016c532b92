"""Who is asking: the service's name and logo, as the approval and enrollment pages show them."""

from __future__ import annotations

from ciba_service.config import Settings

__all__ = ["service_branding"]


def service_branding(settings: Settings) -> dict[str, str]:
    """``display_name`` (``rp_name`` when unset) and ``logo_url`` (empty: no logo)."""
    return {"display_name": settings.display_name or settings.rp_name, "logo_url": settings.logo_url}
