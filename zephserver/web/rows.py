"""Plain SQL for the job manager's hot writes (a job's INSERT and the UPDATE of each state
change), about half the time of the same statement through the ORM.

- Each statement is built once per database and column set, not per call.
- A value is converted by its field (``get_db_prep_save``) unless it is already what the
  database takes (a ``str`` for a text column, an ``int`` for an integer one, None), or is
  a datetime in UTC, the job manager's every timestamp: written as Django writes it
  (SQLite's text of the naive UTC time, PostgreSQL's the value itself), without the
  field's three conversions (two thirds of a state change's UPDATE).
- It runs on the DB-API cursor itself, under Django's error wrapper (its errors are still
  ``django.db.DatabaseError``), in the caller's transaction. Django's own cursor wrapper,
  its query log and ``execute_wrapper`` hooks do not see these statements.

Works on SQLite (3.35+: ``RETURNING``) and PostgreSQL alike.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# Fields whose value of this exact type goes to the database unchanged.
_PLAIN = {"CharField": str, "TextField": str, "IntegerField": int,
          "BigIntegerField": int, "FloatField": float, "ForeignKey": int}

# (alias, what, model, ...) -> the SQL and, for each value, (field, its plain type)
_statements: dict[tuple, tuple[str, list[tuple[Any, type | None]]]] = {}


def update(obj: Any, names: Sequence[str], connection: Any) -> int:
    """UPDATE columns ``names`` of ``obj``'s row; how many rows changed (0: it is gone)."""
    key = (connection.alias, "update", type(obj), tuple(names))
    found = _statements.get(key)
    if found is None:
        meta, quote = obj._meta, connection.ops.quote_name
        fields = [meta.get_field(name) for name in names]
        sets = ", ".join(f"{quote(f.column)} = %s" for f in fields)
        found = _statements[key] = (_placeholders(
            connection, f"UPDATE {quote(meta.db_table)} SET {sets} "
                        f"WHERE {quote(meta.pk.column)} = %s"), _typed(fields, connection))
    sql, fields = found
    values = [_value(field, plain, getattr(obj, field.attname), connection)
              for field, plain in fields]
    values.append(obj.pk)
    with connection.wrap_database_errors:
        cursor = _cursor(connection)
        try:
            cursor.execute(sql, values)
            return cursor.rowcount
        finally:
            cursor.close()


def insert(objs: Sequence[Any], connection: Any) -> None:
    """INSERT ``objs`` (new records of one model) in one statement; each gets its id and is
    marked saved, as ``bulk_create`` leaves them."""
    model = type(objs[0])
    key = (connection.alias, "insert", model, len(objs))
    found = _statements.get(key)
    if found is None:
        meta, quote = model._meta, connection.ops.quote_name
        fields = [f for f in meta.concrete_fields if not f.primary_key]
        row = f"({', '.join(['%s'] * len(fields))})"
        found = _statements[key] = (_placeholders(
            connection, f"INSERT INTO {quote(meta.db_table)} "
                        f"({', '.join(quote(f.column) for f in fields)}) VALUES "
                        f"{', '.join([row] * len(objs))} RETURNING {quote(meta.pk.column)}"),
            _typed(fields, connection))
    sql, fields = found
    values = []
    for obj in objs:
        for field, plain in fields:
            value = (field.pre_save(obj, True) if plain is _STAMPED
                     else getattr(obj, field.attname))
            values.append(_value(field, plain, value, connection))
    with connection.wrap_database_errors:
        cursor = _cursor(connection)
        try:
            cursor.execute(sql, values)
            ids = [row[0] for row in cursor.fetchall()]
        finally:
            cursor.close()
    for obj, pk in zip(objs, ids, strict=True):  # (in the order of the VALUES, as Django's)
        obj.pk = pk
        obj._state.adding, obj._state.db = False, connection.alias


class _STAMPED:  # a field set as the row is written (auto_now, auto_now_add)
    pass


class _UTC_TEXT:  # a DateTimeField where the database takes a UTC datetime as its text
    pass


class _UTC_AS_IS:  # a DateTimeField where the driver takes an aware datetime itself
    pass


def _typed(fields: list[Any], connection: Any) -> list[tuple[Any, type | None]]:
    return [(f, _STAMPED if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
             else _datetime_kind(connection) if f.get_internal_type() == "DateTimeField"
             else _PLAIN.get(f.get_internal_type())) for f in fields]


def _datetime_kind(connection: Any) -> type | None:
    """How a UTC datetime goes to ``connection`` unconverted (None: through its field)."""
    from django.conf import settings

    if not settings.USE_TZ:
        return None
    if connection.vendor == "sqlite" and connection.timezone_name == "UTC":
        return _UTC_TEXT  # (its adapt_datetimefield_value: str() of the naive UTC time)
    if connection.vendor == "postgresql":
        return _UTC_AS_IS  # (its adapt_datetimefield_value: the value itself)
    return None


def _value(field: Any, plain: type | None, value: Any, connection: Any) -> Any:
    if value is None or type(value) is plain:
        return value
    if (plain is _UTC_TEXT or plain is _UTC_AS_IS) and type(value) is datetime \
            and value.tzinfo is UTC:
        return str(value.replace(tzinfo=None)) if plain is _UTC_TEXT else value
    return field.get_db_prep_save(value, connection)


def _cursor(connection: Any) -> Any:
    connection.ensure_connection()
    return connection.connection.cursor()


def _placeholders(connection: Any, sql: str) -> str:
    """Django's ``%s`` as the driver takes it (sqlite3's are ``?``)."""
    return sql.replace("%s", "?") if connection.vendor == "sqlite" else sql
