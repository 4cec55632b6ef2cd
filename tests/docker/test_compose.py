"""docker-compose.yml, .env.example and the Dockerfiles: what they set and reserve.

Every MEDRET_* variable a deployment file sets must be one the service reads
(``app.settings.environment_variables()``) or one of the few only the entrypoint reads.
The schema and lint checks are ``make docker-lint`` (hadolint, check-jsonschema).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import environment_variables, load_settings
from dicomweb import settings as dicomweb_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
DOCKERFILES = [REPO / "docker" / "Dockerfile.cpu", REPO / "docker" / "Dockerfile.gpu"]

# Read by docker/entrypoint.sh before the service starts, so not fields of Settings.
ENTRYPOINT_ONLY_VARIABLES = {"MEDRET_DB_WAIT_S"}
# Read by the DICOMweb client (credentials, trust, timeouts), not fields of Settings either.
DICOMWEB_CLIENT_VARIABLES = set(dicomweb_settings.ENVIRONMENT_VARIABLES)
ORTHANC_DICOMWEB = "http://orthanc:8042/dicom-web"

MEDRET_NAME = re.compile(r"\bMEDRET_[A-Z0-9_]+\b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def service_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's ``environment``, written as a map or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {str(k): None if v is None else str(v) for k, v in env.items()}
    pairs = (str(item).partition("=") for item in env)
    return {name: value if sep else None for name, sep, value in pairs}


def test_compose_sets_only_known_medret_variables(compose: dict[str, Any]) -> None:
    known = set(environment_variables()) | ENTRYPOINT_ONLY_VARIABLES | DICOMWEB_CLIENT_VARIABLES
    set_anywhere = {
        (name, service_name)
        for service_name, service in compose["services"].items()
        for name in service_environment(service)
        if name.startswith("MEDRET_")
    }
    assert set_anywhere, "the compose file sets no MEDRET_* variable: the parser is wrong"
    unknown = sorted(pair for pair in set_anywhere if pair[0] not in known)
    assert not unknown, f"variables no part of medret reads: {unknown}"


def test_env_example_names_only_known_medret_variables() -> None:
    known = set(environment_variables()) | ENTRYPOINT_ONLY_VARIABLES | DICOMWEB_CLIENT_VARIABLES
    named = set(MEDRET_NAME.findall(ENV_EXAMPLE.read_text()))
    assert "MEDRET_ADMIN_TOKEN" in named
    assert not named - known, f"unknown variables in .env.example: {sorted(named - known)}"


def test_entrypoint_only_variables_are_read_by_the_entrypoint_and_not_settings() -> None:
    script = ENTRYPOINT.read_text()
    settings_variables = set(environment_variables())
    for name in ENTRYPOINT_ONLY_VARIABLES:
        assert "${" + name in script, f"{name} is allowlisted but the entrypoint never reads it"
        assert name not in settings_variables, f"{name} is a Settings field now: unlist it"


def test_every_interpolated_variable_is_documented_in_env_example() -> None:
    interpolated = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert "POSTGRES_PASSWORD" in interpolated
    assert not interpolated - documented, sorted(interpolated - documented)


def test_the_database_password_is_required_and_its_placeholder_refused(tmp_path: Path) -> None:
    """Compose stops without POSTGRES_PASSWORD; the entrypoint refuses the example's value."""
    text = COMPOSE.read_text()
    assert re.search(r"POSTGRES_PASSWORD: \$\{POSTGRES_PASSWORD:\?[^}]+\}", text)
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    password = values["POSTGRES_PASSWORD"]
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "migrate"],
        env={
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "POSTGRES_PASSWORD": password,
            "MEDRET_DATABASE_URL": f"postgresql+psycopg://medret:{password}@db/medret",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "POSTGRES_PASSWORD is a placeholder" in result.stderr


def test_the_admin_token_placeholder_is_refused_by_the_service() -> None:
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    with pytest.raises(ValueError, match="MEDRET_ADMIN_TOKEN must be at least"):
        load_settings(admin_token=values["MEDRET_ADMIN_TOKEN"])


def test_api_waits_for_a_healthy_database_and_uses_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["api"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["db"]["healthcheck"]["test"])
    for name in ("api", "indexer"):
        url = service_environment(services[name])["MEDRET_DATABASE_URL"]
        assert url is not None
        assert url.startswith("postgresql+psycopg://medret:${POSTGRES_PASSWORD}@db:5432/")
        assert services[name]["env_file"] == ".env"


def test_api_publishes_port_8000_on_loopback_with_a_health_check(
    compose: dict[str, Any],
) -> None:
    api = compose["services"]["api"]
    # compose fills in API_PUBLISH_ADDRESS, 127.0.0.1 when it is unset: never all interfaces
    assert api["ports"] == ["${API_PUBLISH_ADDRESS:-127.0.0.1}:8000:8000"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert any(str(v).endswith(":/data") for v in api["volumes"])


def test_one_shot_services_are_behind_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["indexer"]["profiles"] == ["index"]
    assert services["indexer"]["command"][0] == "index"
    assert any(str(v).endswith(":/archive:ro") for v in services["indexer"]["volumes"])
    assert services["trainer"]["profiles"] == ["train"]
    assert services["trainer"]["command"][0] == "train"


def test_the_trainer_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    trainer = compose["services"]["trainer"]
    assert trainer["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_services_build_dockerfiles_that_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
    for name in ("api", "indexer"):
        assert compose["services"][name]["build"]["dockerfile"] == "docker/Dockerfile.cpu"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_the_entrypoint_as_an_unprivileged_user(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert "COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/medret-entrypoint" in text
    assert 'ENTRYPOINT ["/usr/local/bin/medret-entrypoint"]' in text
    assert 'CMD ["api"]' in text
    assert re.search(r"^USER 10001(:10001)?$", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    assert "EXPOSE 8000" in text
    assert "VOLUME /data" in text
    base_images = re.findall(r"^FROM (\S+)", text, re.M)
    assert base_images
    for image in base_images:
        assert ":" in image, f"{image}: pin the base image by tag"
        assert not image.endswith(":latest"), f"{image}: pin the base image by tag"


def test_secrets_and_local_state_stay_out_of_git_and_the_build_context() -> None:
    gitignored = (REPO / ".gitignore").read_text().splitlines()
    assert ".env" in gitignored
    dockerignored = set((REPO / ".dockerignore").read_text().splitlines())
    assert {".git", ".env", ".venv*", "data", "runs", "reports"} <= dockerignored


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_every_package_the_project_installs(dockerfile: Path) -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile.read_text(), re.M))
    assert packages == copied
    assert packages == set(project["tool"]["importlinter"]["root_packages"])


def test_the_pacs_services_are_behind_the_pacs_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["orthanc"]["profiles"] == ["pacs"]
    assert services["follower"]["profiles"] == ["pacs"]
    for name in ("db", "api"):  # a plain `docker compose up` starts no PACS
        assert "profiles" not in services[name]
        assert "orthanc" not in services[name].get("depends_on", {})


def test_the_orthanc_image_is_pinned_persistent_and_health_checked(
    compose: dict[str, Any],
) -> None:
    orthanc = compose["services"]["orthanc"]
    image, _, tag = orthanc["image"].partition(":")
    assert image == "orthancteam/orthanc"
    assert tag
    assert not tag.startswith("latest")
    assert "orthanc-db:/var/lib/orthanc/db" in orthanc["volumes"]
    assert "orthanc-db" in compose["volumes"]
    assert orthanc["healthcheck"]["test"][0] == "CMD"
    assert orthanc["restart"] == "unless-stopped"
    assert service_environment(orthanc)["DICOM_WEB_PLUGIN_ENABLED"] == "true"


def test_every_published_port_is_on_loopback(compose: dict[str, Any]) -> None:
    published = {
        name: [str(port) for port in service.get("ports", [])]
        for name, service in compose["services"].items()
    }
    assert published["orthanc"] == ["127.0.0.1:8042:8042"]
    for name, ports in published.items():
        for port in ports:
            address = port.rsplit(":", 2)[0]
            assert address in {"127.0.0.1", "${API_PUBLISH_ADDRESS:-127.0.0.1}"}, (name, port)


def test_the_orthanc_password_has_no_default_and_orthanc_checks_it(
    compose: dict[str, Any],
) -> None:
    text = COMPOSE.read_text()
    # every use of ORTHANC_PASSWORD: no fallback value anyone could guess
    defaults = re.findall(r"\$\{ORTHANC_PASSWORD:?-([^}]*)\}", text)
    assert defaults
    assert all(value == "" for value in defaults), defaults
    assert "ORTHANC__REGISTERED_USERS" not in text  # only the start script writes the user
    assert not re.search(r"^ORTHANC_PASSWORD=", ENV_EXAMPLE.read_text(), re.M)
    orthanc = compose["services"]["orthanc"]
    assert orthanc["entrypoint"] == ["/bin/sh", "/medret/orthanc-start.sh"]
    assert "./docker/orthanc-start.sh:/medret/orthanc-start.sh:ro" in orthanc["volumes"]
    assert (REPO / "docker" / "orthanc-start.sh").is_file()
    assert service_environment(orthanc)["ORTHANC_PASSWORD"] == "${ORTHANC_PASSWORD:-}"


def test_the_api_and_the_follower_reach_the_orthanc_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api = service_environment(services["api"])
    assert api["MEDRET_DICOMWEB_URL"] is not None
    assert ORTHANC_DICOMWEB in api["MEDRET_DICOMWEB_URL"]
    assert "ORTHANC_PASSWORD" in (api["MEDRET_DICOMWEB_PASSWORD"] or "")
    follower = services["follower"]
    env = service_environment(follower)
    assert env["MEDRET_DICOMWEB_URL"] == ORTHANC_DICOMWEB
    assert (
        env["MEDRET_DICOMWEB_USERNAME"]
        == service_environment(services["orthanc"])["ORTHANC_USERNAME"]
    )
    assert env["MEDRET_DICOMWEB_PASSWORD"] == "${ORTHANC_PASSWORD:-}"
    assert env["MEDRET_DATABASE_URL"] == api["MEDRET_DATABASE_URL"]
    load_settings(dicomweb_url=env["MEDRET_DICOMWEB_URL"])  # a URL the service accepts


def test_the_follower_runs_medret_follow_on_the_orthanc_source(compose: dict[str, Any]) -> None:
    services = compose["services"]
    follower = services["follower"]
    command = follower["command"]
    assert command[0] == "follow"
    assert command[command.index("--source") + 1] == f"dicomweb+{ORTHANC_DICOMWEB}"
    assert command[command.index("--collection") + 1] == "${PACS_COLLECTION:-pacs}"
    assert follower["image"] == services["api"]["image"]
    assert follower["build"] == services["api"]["build"]
    assert follower["restart"] == "unless-stopped"
    assert follower["depends_on"]["orthanc"]["condition"] == "service_healthy"
    assert follower["depends_on"]["db"]["condition"] == "service_healthy"
    assert follower["env_file"] == ".env"
    entrypoint = ENTRYPOINT.read_text()
    assert re.search(r"^\s+serve \| index \| follow \|", entrypoint, re.M)
