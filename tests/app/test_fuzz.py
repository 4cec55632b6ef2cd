"""Schema-driven fuzzing (schemathesis) of every API operation: no input gives a 5xx, and
answers conform to the OpenAPI schema (status codes, content types, bodies).

The schema is the app's own ``openapi()`` (building it needs no database). Requests go
in-process through schemathesis' ASGI client, which runs the app's lifespan, so the
small "derm" collection of ``service_env`` is loaded and queries reach the model and
the index. The admin token is configured and sent with every request, so the admin
operations are fuzzed past their guard; ``MEDRET_ARCHIVE_ROOTS`` is an empty folder, so
no reindex can find a source to start from, and ``DELETE /admin/cases/{id}`` (which
would start a removal job) is left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.main import create_app
from app.services import Services
from app.settings import load_settings
from support.service import ADMIN_AUTH, ADMIN_TOKEN, ServiceEnv

BASE_URL = f"http://{asgi.HOST}"
MAX_EXAMPLES = 40


def _openapi() -> dict[str, object]:
    unused = Path(__file__).resolve().parent / "never-created"
    return create_app(load_settings(data_dir=unused, admin_token=ADMIN_TOKEN)).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture(scope="module")
def fuzz_app(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[asgi.ASGIClient, Services]]:
    empty_root = tmp_path_factory.mktemp("no-archives")
    app = create_app(service_env.settings(archive_roots=[str(empty_root)]))
    client = asgi.get_client(cast(Any, app))
    try:
        with client:  # starts the app's lifespan (kept until shutdown_lifespans)
            services = app.state.services
            assert isinstance(services, Services)
            jobs_before = services.store.list_jobs()
            yield client, services
            assert services.store.list_jobs() == jobs_before, "the fuzz started a job"
    finally:
        asgi.shutdown_lifespans()


def error_is_json_with_a_detail(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """Every error answer is JSON: a ``detail`` sentence and the X-Request-ID's id."""
    headers = {k.lower(): v for k, v in response.headers.items()}
    request_id = headers.get("x-request-id", [""])[0]
    assert request_id, "no X-Request-ID header"
    if response.status_code < 400:
        return None
    content_type = headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error as {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body.get("detail"), str), body
    assert len(body["detail"].split()) >= 3, body
    assert body.get("request_id") == request_id, body
    return True


FUZZED = schema.exclude(method="DELETE", path="/admin/cases/{case_id}")
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@FUZZED.parametrize()
@FUZZ_SETTINGS
def test_fuzz_never_gives_a_server_error(
    case: schemathesis.Case[Any], fuzz_app: tuple[asgi.ASGIClient, Services]
) -> None:
    """Positive and negative examples of every operation: never a 5xx, errors are JSON."""
    client, _ = fuzz_app
    case.call_and_validate(
        base_url=BASE_URL,
        session=client,
        headers=ADMIN_AUTH,
        checks=[not_a_server_error, error_is_json_with_a_detail],
    )


@FUZZED.parametrize()
@FUZZ_SETTINGS
def test_fuzz_answers_conform_to_the_schema(
    case: schemathesis.Case[Any], fuzz_app: tuple[asgi.ASGIClient, Services]
) -> None:
    """Every other built-in check: documented status codes, content types, response
    bodies and headers, negative data rejected. Positive data acceptance cannot hold:
    the schema says "a file", not "an image", so schema-valid random bytes are 415."""
    client, _ = fuzz_app
    case.call_and_validate(
        base_url=BASE_URL,
        session=client,
        headers=ADMIN_AUTH,
        excluded_checks=[positive_data_acceptance],
    )
