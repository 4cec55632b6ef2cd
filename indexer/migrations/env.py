"""Alembic environment of the metadata store (``indexer/store/``).

Run in code, without an ``alembic.ini``: :func:`indexer.store.migrations.upgrade` builds
the config with :func:`indexer.store.migrations.alembic_config` and passes its open
connection (already inside the transaction the whole upgrade runs in) as
``config.attributes["connection"]``. With a ``sqlalchemy.url`` main option instead
(``alembic_config(url)``), the Alembic commands work directly, e.g. to autogenerate a new
revision against ``Base.metadata``, or offline to print the SQL for a DBA.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from indexer.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: let Alembic copy tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Print the migration SQL for the configured URL's dialect."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection, or one opened from the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database: pass a connection in config.attributes['connection'] or build the "
            "config with indexer.store.migrations.alembic_config(url)"
        )
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
