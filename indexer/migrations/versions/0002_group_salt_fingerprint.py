"""The fingerprint of the salt a collection's group keys are hashed with.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``collections.group_salt_fingerprint`` is ``indexer.group_keys.group_salt_fingerprint`` of
``MEDRET_GROUP_SALT``, recorded by the first build after this revision; a build with
another salt is refused. Collections written before it have none (docs/indexer.md, "The
group-key salt", says what the next build does with them). Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (existing rows: not recorded yet)."""
    op.add_column("collections", sa.Column("group_salt_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the column (SQLite 3.35 and later drop a column in place)."""
    op.drop_column("collections", "group_salt_fingerprint")
