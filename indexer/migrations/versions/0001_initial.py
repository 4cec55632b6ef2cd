"""Initial schema: collections, cases, id_counter, index_versions, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Written out in full (not imported from ``indexer/store/tables.py``) so that it keeps creating
this revision's schema when the models change later. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# JSON on SQLite, JSONB on PostgreSQL (label filters use its containment operator).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC_TIME = sa.DateTime(timezone=True)  # indexer.store.tables.UTCDateTime stores through this


def upgrade() -> None:
    """Create every table, its indexes, and the case-id counter row."""
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=False),
        sa.Column("task", sa.String(20), nullable=False),
        sa.Column("label_codes", JSON, nullable=False),
        sa.Column("label_names", JSON, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
        sa.CheckConstraint(
            "task IN ('single_label', 'multi_label')", name=op.f("ck_collections_task")
        ),
    )
    op.create_table(
        "cases",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("group_key_hash", sa.String(64), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.ForeignKeyConstraint(
            ["collection_id"], ["collections.id"], name=op.f("fk_cases_collection_id_collections")
        ),
        sa.UniqueConstraint(
            "collection_id", "content_hash", name=op.f("uq_cases_collection_id_content_hash")
        ),
        sa.UniqueConstraint(
            "collection_id", "external_id", name=op.f("uq_cases_collection_id_external_id")
        ),
    )
    op.create_index(op.f("ix_cases_collection_id_split"), "cases", ["collection_id", "split"])
    op.create_table(
        "id_counter",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("next_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_id_counter")),
    )
    id_counter = sa.table("id_counter", sa.column("name", sa.String), sa.column("next_id"))
    op.bulk_insert(id_counter, [{"name": "case_id", "next_id": 1}])
    op.create_table(
        "index_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=False),
        sa.Column("factory", sa.String(200), nullable=False),
        sa.Column("vector_count", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("completed_at", UTC_TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_versions")),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_index_versions_collection_id_collections"),
        ),
        sa.UniqueConstraint(
            "collection_id", "version", name=op.f("uq_index_versions_collection_id_version")
        ),
        sa.CheckConstraint(
            "state IN ('building', 'ready', 'failed', 'pruned')",
            name=op.f("ck_index_versions_state"),
        ),
    )
    # At most one active version per collection (partial unique index: both databases).
    op.create_index(
        op.f("ux_index_versions_one_active"),
        "index_versions",
        ["collection_id"],
        unique=True,
        postgresql_where=sa.text("is_active"),
        sqlite_where=sa.text("is_active"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("errors", JSON, nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=True),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.ForeignKeyConstraint(
            ["collection_id"], ["collections.id"], name=op.f("fk_jobs_collection_id_collections")
        ),
        sa.CheckConstraint("kind IN ('full', 'add', 'remove')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_jobs_state")
        ),
    )
    op.create_index(op.f("ix_jobs_collection_id_state"), "jobs", ["collection_id", "state"])
    op.create_index(op.f("ix_jobs_state"), "jobs", ["state"])


def downgrade() -> None:
    """Drop every table (and with it every case's metadata)."""
    op.drop_index(op.f("ix_jobs_state"), table_name="jobs")
    op.drop_index(op.f("ix_jobs_collection_id_state"), table_name="jobs")
    op.drop_table("jobs")
    op.drop_index(op.f("ux_index_versions_one_active"), table_name="index_versions")
    op.drop_table("index_versions")
    op.drop_table("id_counter")
    op.drop_index(op.f("ix_cases_collection_id_split"), table_name="cases")
    op.drop_table("cases")
    op.drop_table("collections")
