"""The schema: the Alembic migrations build exactly the tables of ``indexer.store.tables``."""

from __future__ import annotations

import enum
import re

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect

from indexer.store import (
    Base,
    JobKind,
    JobState,
    MetadataStore,
    StoreError,
    VersionState,
    alembic_config,
    head_revision,
)


def test_migrations_create_every_table_and_match_the_models(store_url: str) -> None:
    store = MetadataStore.open(store_url)
    try:
        assert store.current_revision() == head_revision()
        tables = set(inspect(store.engine).get_table_names())
        assert {"collections", "cases", "id_counter", "index_versions", "jobs"} <= tables
        with store.engine.connect() as conn:  # the migration builds exactly the models' schema
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        for table in Base.metadata.sorted_tables:  # which compare_metadata does not check
            reflected = inspect(store.engine).get_check_constraints(table.name)
            modelled = [c.name for c in table.constraints if isinstance(c, CheckConstraint)]
            assert sorted(c["name"] for c in reflected) == sorted(modelled)

        cfg = alembic_config()  # the downgrade removes everything; upgrading again restores it
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert store.current_revision() is None
        assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    finally:
        store.close()
    again = MetadataStore.open(store_url)
    assert again.current_revision() == head_revision()
    assert again.reserve_ids(1) == [1]
    again.close()


def test_an_unmigrated_database_is_refused_without_migrate(store_url: str) -> None:
    with pytest.raises(StoreError, match="is not migrated"):
        MetadataStore.open(store_url, migrate=False)
    MetadataStore.open(store_url).close()
    store = MetadataStore.open(store_url, migrate=False)
    assert store.current_revision() == head_revision()
    store.close()


@pytest.mark.parametrize(
    ("table", "constraint", "values"),
    [
        ("index_versions", "ck_index_versions_state", VersionState),
        ("jobs", "ck_jobs_state", JobState),
        ("jobs", "ck_jobs_kind", JobKind),
    ],
)
def test_the_migrated_schema_allows_exactly_the_enum_values(
    store: MetadataStore, table: str, constraint: str, values: type[enum.StrEnum]
) -> None:
    (check,) = (
        c for c in inspect(store.engine).get_check_constraints(table) if c["name"] == constraint
    )
    allowed = set(re.findall(r"'([a-z_]+)'", check["sqltext"]))
    assert allowed == {value.value for value in values}
