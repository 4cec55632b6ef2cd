"""PACS-backed collections: unlabelled cases and the follower's cursor.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``cases.labelled`` is false for a case without a diagnosis (an instance of a PACS that no
label table names); the k-NN vote counts only labelled cases. Existing rows are labelled.
``follow_cursors`` holds, per collection, where ``medret follow`` stopped reading a
source's change feed, so that a follower that was killed resumes there. Works on SQLite
and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)  # indexer.store.tables.UTCDateTime stores through this


def upgrade() -> None:
    """Add the column (true for existing cases) and the cursor table."""
    op.add_column(
        "cases",
        sa.Column("labelled", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "follow_cursors",
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("collection_id", "source", name=op.f("pk_follow_cursors")),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_follow_cursors_collection_id_collections"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    """Drop the table and the column."""
    op.drop_table("follow_cursors")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("labelled")
