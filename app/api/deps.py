"""Shared route dependencies as ``Annotated`` aliases."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.errors import ApiError
from app.services import Services


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ApiError(503, "the service is starting; try again in a moment")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_admin(request: Request, services: ServicesDep) -> None:
    """Bearer-token check, in constant time. No token configured → the admin API is off."""
    token = services.settings.admin_token
    if token is None:
        raise ApiError(404, "the admin API is disabled: set MEDRET_ADMIN_TOKEN to enable it")
    header = request.headers.get("authorization", "")
    scheme, _, offered = header.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(offered.strip().encode(), expected):
        raise ApiError(401, "the admin API needs 'Authorization: Bearer <MEDRET_ADMIN_TOKEN>'")


AdminDep = Depends(require_admin)
