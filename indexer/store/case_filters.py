"""Which cases of a collection pass filters on label, split and metadata, evaluated in SQL
with the JSON functions of the session's dialect (:func:`case_ids_matching`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import ColumnElement, Text, cast, func, literal, select, type_coerce
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from indexer.store.errors import StoreError
from indexer.store.tables import Case

_META_KEY: Final = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")


def case_ids_matching(
    session: Session, collection_id: int, filters: Mapping[str, str]
) -> list[int]:
    """Sorted ids of the collection's cases that pass every filter.

    ``label``: the case has this label code; ``split``: equal split; any other key:
    ``meta[key]`` equals the value, compared as text (a number 3 matches "3", a boolean
    matches "true"/"false"). Evaluated in SQL with each dialect's JSON functions
    (PostgreSQL: ``labels @> '["code"]'`` and ``metadata ->> key``; SQLite:
    ``json_each`` and ``json_extract``). Cost: one index range scan over the
    collection's rows with a JSON lookup per row — O(cases in the collection), done in
    the database; only the matching ids travel back.
    """
    dialect = session.get_bind().dialect.name
    conditions: list[ColumnElement[bool]] = [Case.collection_id == collection_id]
    for key, value in filters.items():
        if key == "label":
            conditions.append(_has_label(dialect, value))
        elif key == "split":
            conditions.append(Case.split == value)
        else:
            conditions.append(_meta_text(dialect, key) == value)
    return list(session.scalars(select(Case.id).where(*conditions).order_by(Case.id)))


def _has_label(dialect: str, code: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return type_coerce(Case.labels, JSONB).contains([code])
    items = func.json_each(Case.labels).table_valued("value")
    return select(literal(1)).select_from(items).where(items.c.value == code).exists()


def _meta_text(dialect: str, key: str) -> ColumnElement[Any]:
    if not _META_KEY.match(key):
        raise StoreError(f"metadata filter key {key!r}: use letters, digits, '_' and '-' only")
    if dialect == "postgresql":
        return type_coerce(Case.meta, JSONB)[key].astext
    path = f'$."{key}"'
    kind = func.json_type(Case.meta, path)
    return sql_case(
        (kind == "true", literal("true")),
        (kind == "false", literal("false")),
        else_=cast(func.json_extract(Case.meta, path), Text),
    )
