"""The schema's revision: run the Alembic migrations, or check that they have run.

The schema is created and upgraded by Alembic (``indexer/migrations``), run in code by
:func:`upgrade`; no ``alembic.ini`` is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from indexer.store.engine import display_url, for_writing
from indexer.store.errors import StoreError

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"

# Taken (transaction-scoped) while migrating PostgreSQL, so that replicas starting at the
# same time do not run the same migration twice. Any constant int64 works; this is "medret".
_PG_MIGRATION_LOCK: Final = 0x6D6564726574


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for ``indexer/migrations`` built in code (no alembic.ini).

    Pass ``url`` to use the Alembic commands directly, e.g. to write a new revision::

        command.revision(alembic_config("sqlite:///dev.db"), "add x", autogenerate=True)
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration revision this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade(engine: Engine) -> None:
    """Run the Alembic migrations up to head, in one transaction (concurrent callers on
    PostgreSQL wait on an advisory lock)."""
    cfg = alembic_config()
    try:
        with for_writing(engine).begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            before = MigrationContext.configure(conn).get_current_revision()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except OperationalError as exc:
        raise StoreError(
            f"cannot migrate the database at {display_url(engine.url)}: {exc.orig}"
        ) from exc
    head = head_revision()
    if before != head:
        log.info("migrated the database at %s from %s to %s", display_url(engine.url), before, head)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (``None``: never migrated)."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise StoreError(
            f"cannot read the database at {display_url(engine.url)}: {exc.orig}"
        ) from exc


def check_schema(engine: Engine) -> None:
    """Raise :class:`StoreError` unless the database is at the newest revision."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = display_url(engine.url)
    if current is None:
        raise StoreError(
            f"database at {where} is not migrated; run the migrations with "
            "MetadataStore.open(url, migrate=True) (any 'medret index' run does this)"
        )
    raise StoreError(
        f"database at {where} is at schema revision {current}, but this code "
        f"expects {head}; migrate it with MetadataStore.open(url, migrate=True), or update "
        "the code if the database is newer"
    )
