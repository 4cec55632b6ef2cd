"""The service's settings: one pydantic-settings class, read from ``MEDRET_*`` variables.

Every variable the service (and its Docker deployment) reads is a field here, so the
table in the README and the compose file can be checked against this one class.
Settings are built by :func:`load_settings` when the app is created, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from archives.privacy import metadata_allowlist
from dicomweb.errors import DicomwebError
from dicomweb.refs import parse_source
from imaging.limits import DecodeBudget, DecodeLimits
from indexer.group_keys import checked_group_salt

ENV_PREFIX = "MEDRET_"
MIN_ADMIN_TOKEN_LENGTH = 16

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Service configuration (environment variables ``MEDRET_<FIELD>``, case-insensitive)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    data_dir: Path = Field(
        Path("data"), description="index files, job logs, thumbnails, the default SQLite file"
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL (default sqlite:///<data_dir>/medret.db)"
    )
    collections: CommaList = Field(
        default_factory=list,
        description="collections to serve, comma-separated (default: every collection "
        "that has an active index version)",
    )
    default_collection: str | None = Field(
        None, description="the collection a query without ?collection= goes to"
    )
    host: str = Field("127.0.0.1", description="address 'medret serve' listens on")
    port: int = Field(8000, ge=1, le=65535, description="port 'medret serve' listens on")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="a request's line and headers must arrive within this many seconds of "
        "the connection opening (or of the previous answer); else 408 and the connection closes",
    )
    body_timeout_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="seconds a request body gets, plus one for every "
        "MEDRET_BODY_MIN_BYTES_PER_S bytes received; a slower body is answered 408",
    )
    body_min_bytes_per_s: int = Field(
        1024,
        ge=0,
        description="slowest upload rate kept going past MEDRET_BODY_TIMEOUT_S (0: the "
        "whole body within it)",
    )
    max_connections: int = Field(
        256,
        ge=1,
        le=100_000,
        description="most open connections; one more is answered 503 and closed at once",
    )
    admin_token: SecretStr | None = Field(
        None,
        description=f"bearer token of the /admin API (at least {MIN_ADMIN_TOKEN_LENGTH} "
        "characters); unset: the admin API is disabled",
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="origins allowed by CORS, comma-separated (default none)"
    )
    max_upload_mb: float = Field(32.0, gt=0, description="largest upload accepted, MiB")
    max_pixels: int = Field(
        64_000_000, gt=0, description="largest decoded image accepted, width × height"
    )
    max_decoded_mb: float = Field(
        256.0,
        gt=0,
        description="largest decoded image accepted, MiB of its samples in their own type "
        "(rows × columns × samples × bytes per sample × frames read), checked from the header",
    )
    decode_budget_mb: float = Field(
        1024.0,
        gt=0,
        description="memory that all the decodes running at once may hold, MiB; a decode "
        "waits for its share, and one that needs more than all of it is refused (413)",
    )
    decode_wait_s: float = Field(
        30.0,
        ge=0,
        le=600,
        description="longest a decode waits for its share of the decode budget (then 503)",
    )
    max_dicom_sequence_items: int = Field(
        10_000,
        ge=1,
        description="most DICOM sequence items read from one header (plus 16 per frame), "
        "counted before the header is parsed",
    )
    batch_max: int = Field(16, ge=1, le=1024, description="most queries in one model forward")
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="longest a query waits for others to share its batch (0: a batch is "
        "whatever queued while the previous one ran)",
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    bf16: bool = Field(True, description="bf16 autocast on CUDA; ignored on the CPU")
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="CPU threads of one model forward (0: half the cores, leaving the rest "
        "to decoding and HTTP)",
    )
    search_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="FAISS OpenMP threads per search (1 suits single queries on shared cores)",
    )
    ood_reference_cases: int = Field(
        2000,
        ge=0,
        le=100_000,
        description="indexed images the out-of-distribution check is calibrated on (0: off)",
    )
    ood_false_alarm_rate: float = Field(
        0.02,
        gt=0,
        lt=0.5,
        description="share of the collection's own cases that would be flagged: sets the "
        "out-of-distribution threshold",
    )
    reload_interval_s: float = Field(
        2.0, gt=0, description="how often the service looks for a newly activated index"
    )
    thumbnail_px: int = Field(256, ge=32, le=1024, description="thumbnail longest side")
    archive_roots: CommaList = Field(
        default_factory=list,
        description="folders /admin/reindex may read archives from, comma-separated "
        "(default: the data directory only)",
    )
    index_workers: int = Field(2, ge=0, le=64, description="decoding processes of a reindex job")
    index_batch_size: int = Field(64, ge=1, le=4096, description="batch size of a reindex job")
    metadata_allowlist: CommaList = Field(
        default_factory=list,
        description="label-table columns kept as case metadata besides the default "
        "clinical allowlist (docs/indexer.md), comma-separated; a column that names a "
        "person is refused",
    )
    group_salt: SecretStr | None = Field(
        None,
        description="secret salt of the hashed patient/lesion keys in SQL, at least 32 "
        "random bytes (unset: /admin/reindex is refused)",
    )
    dicomweb_url: str | None = Field(
        None,
        description="the PACS's DICOMweb root, http(s)://host:port/dicom-web: where "
        "/query fetches an instance named by its UIDs, and the one PACS /admin/reindex and "
        "/admin/follow may read (credentials from MEDRET_DICOMWEB_USERNAME/PASSWORD or "
        "MEDRET_DICOMWEB_TOKEN)",
    )
    viewer_url_template: str | None = Field(
        None,
        description="link from a PACS case to the clinical viewer, with {study_uid}, "
        "{series_uid} and {instance_uid}, e.g. "
        "https://viewer/viewer?StudyInstanceUIDs={study_uid} (unset: no viewer_url)",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    _split = field_validator(
        "collections", "cors_origins", "archive_roots", "metadata_allowlist", mode="before"
    )(_split_commas)

    @field_validator("metadata_allowlist")
    @classmethod
    def _no_identifying_columns(cls, value: list[str]) -> list[str]:
        metadata_allowlist(value)  # an ArchiveError (a ValueError) names a refused column
        return value

    @field_validator("dicomweb_url")
    @classmethod
    def _dicomweb_root(cls, value: str | None) -> str | None:
        if not value:
            return None
        text = value if value.startswith("dicomweb+") else f"dicomweb+{value}"
        try:
            return parse_source(text).root
        except DicomwebError as exc:
            raise ValueError(f"MEDRET_DICOMWEB_URL: {exc}") from None

    @field_validator("viewer_url_template")
    @classmethod
    def _viewer_template(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            value.format(study_uid="1", series_uid="2", instance_uid="3")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                "MEDRET_VIEWER_URL_TEMPLATE may use only {study_uid}, {series_uid} and "
                f"{{instance_uid}}: {exc}"
            ) from None
        if not value.startswith(("https://", "http://", "/")):
            raise ValueError("MEDRET_VIEWER_URL_TEMPLATE must be an http(s) URL or a path")
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().isascii() or not value.get_secret_value().isprintable():
            raise ValueError("MEDRET_ADMIN_TOKEN must be printable ASCII (it travels in a header)")
        if len(value.get_secret_value()) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(
                f"MEDRET_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters "
                "(e.g. the output of: python -c 'import secrets; print(secrets.token_hex(24))')"
            )
        return value

    @field_validator("group_salt")
    @classmethod
    def _strong_salt(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        checked_group_salt(value.get_secret_value())  # a GroupSaltError says how to make one
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log level must be DEBUG, INFO, WARNING or ERROR, not {value!r}")
        return level

    @field_validator("cors_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"a CORS origin looks like https://viewer.example, not {origin!r}")
        return value

    @model_validator(mode="after")
    def _default_in_collections(self) -> Settings:
        if (
            self.default_collection
            and self.collections
            and self.default_collection not in self.collections
        ):
            raise ValueError(
                f"MEDRET_DEFAULT_COLLECTION {self.default_collection!r} is not one of "
                f"MEDRET_COLLECTIONS {self.collections}"
            )
        return self

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'medret.db'}"

    @property
    def resolved_torch_threads(self) -> int:
        return self.torch_threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    def decode_limits(self) -> DecodeLimits:
        """The decode limits of one service process, with a decode budget of its own (build
        it once and share it: the budget bounds the decodes of every thread)."""
        return DecodeLimits(
            max_bytes=self.max_upload_bytes,
            max_pixels=self.max_pixels,
            max_decoded_bytes=int(self.max_decoded_mb * 2**20),
            max_sequence_items=self.max_dicom_sequence_items,
            budget=DecodeBudget(int(self.decode_budget_mb * 2**20), self.decode_wait_s),
        )

    @property
    def allowed_archive_roots(self) -> list[Path]:
        roots = [Path(r).expanduser().resolve() for r in self.archive_roots]
        return roots or [self.resolved_data_dir]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit ``overrides`` (e.g. CLI flags) on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


def environment_variables() -> dict[str, str]:
    """``MEDRET_<FIELD>`` → its description: what the README's configuration table lists."""
    return {
        f"{ENV_PREFIX}{name.upper()}": field.description or ""
        for name, field in Settings.model_fields.items()
    }
