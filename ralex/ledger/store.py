"""The one place that knows the ledger schema: migrations and queries (row shapes: :mod:`ralex.ledger.rows`).

The proxy writes through :class:`ralex.ledger.writer.LedgerWriter`; the exporter and the CLI
read with the queries here. SQL lives in constants so sync and async callers share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from importlib import resources
from typing import Any, Final

import psycopg
import psycopg.sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from ralex.budget import ALERT_LEVELS, BudgetError, Thresholds, parse_budget, parse_caps, parse_thresholds, zone
from ralex.config import BudgetDefaults
from ralex.keys import ClientKey
from ralex.ledger.rows import BudgetSettings as BudgetSettings  # re-exported for readers of the ledger
from ralex.ledger.rows import LedgerRow as LedgerRow
from ralex.ledger.rows import row_to_json
from ralex.sinks import pg_text

MIGRATIONS_PACKAGE: Final = "ralex.ledger.migrations"
_MIGRATION_LOCK: Final = 0x7A1E_0001  # pg_advisory_lock key: one migrator at a time


class LedgerUnavailable(RuntimeError):
    """Postgres cannot be reached; the message says where it looked and what to check."""


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable RALEX_DATABASE_URL>"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, connect_timeout=5, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        raise LedgerUnavailable(
            f"cannot reach Postgres at {describe_dsn(dsn)} ({first}); is the postgres service up "
            "and RALEX_DATABASE_URL right?"
        ) from None


# --- migrations ------------------------------------------------------------------------------

def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every packaged migration, in order."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply pending migrations in one transaction each; safe to run from several processes."""
    applied: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ralex_schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM ralex_schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            conn.execute(sql.encode())
            conn.execute("INSERT INTO ralex_schema_migrations (version, name) VALUES (%s, %s)", (version, name))
            applied.append(name)
    return applied


# --- budget settings -------------------------------------------------------------------------

SELECT_SETTINGS: Final = (
    "SELECT daily_limit_usd, timezone, smart_min_remaining_usd, cheap_min_remaining_usd,"
    " emergency_max_tokens, updated_at, updated_by, alias_caps, alert_thresholds FROM budget_settings WHERE id"
)
SEED_SETTINGS: Final = (
    "INSERT INTO budget_settings (daily_limit_usd, timezone, smart_min_remaining_usd,"
    " cheap_min_remaining_usd, emergency_max_tokens) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING"
)


def settings_from_row(row: Sequence[Any]) -> BudgetSettings:
    return BudgetSettings(
        daily_limit=float(row[0]),
        timezone=row[1],
        thresholds=Thresholds(float(row[2]), float(row[3]), int(row[4])),
        updated_at=row[5],
        updated_by=row[6],
        caps={str(k): float(v) for k, v in (row[7] or {}).items()},
        alert_thresholds=tuple(sorted(row[8])) if len(row) > 8 and row[8] else ALERT_LEVELS,
    )


def seed_settings(conn: psycopg.Connection[Any], defaults: BudgetDefaults) -> None:
    """Store first-start budget settings; existing (live) settings are left alone."""
    with conn.transaction():
        conn.execute(SEED_SETTINGS, (defaults.daily_limit, defaults.timezone, defaults.smart_min_remaining,
                                     defaults.cheap_min_remaining, defaults.emergency_max_tokens))


def read_settings(conn: psycopg.Connection[Any]) -> BudgetSettings:
    row = conn.execute(SELECT_SETTINGS).fetchone()
    if row is None:
        raise LedgerUnavailable("budget settings are missing; start the proxy once so it can seed them")
    return settings_from_row(row)


def settings_update(*, daily_limit: object = None, timezone: str | None = None,
                    smart_min_remaining: float | None = None, cheap_min_remaining: float | None = None,
                    emergency_max_tokens: int | None = None, caps: Mapping[str, object] | None = None,
                    alert_thresholds: object = None, by: str = "ralexctl") -> tuple[str, dict[str, Any]] | None:
    """Validated UPDATE for a live settings change (None when nothing changes). Raises BudgetError."""
    changes: dict[str, Any] = {}
    if daily_limit is not None:
        changes["daily_limit_usd"] = parse_budget(daily_limit)
    if timezone is not None:
        zone(timezone)
        changes["timezone"] = timezone
    for column, value in (("smart_min_remaining_usd", smart_min_remaining),
                          ("cheap_min_remaining_usd", cheap_min_remaining)):
        if value is not None:
            if value < 0:
                raise BudgetError(f"{column.removesuffix('_usd')} must be zero or more dollars")
            changes[column] = value
    if emergency_max_tokens is not None:
        if emergency_max_tokens <= 0:
            raise BudgetError("emergency_max_tokens must be a positive number of tokens")
        changes["emergency_max_tokens"] = emergency_max_tokens
    if caps:
        changes["alias_caps"] = Jsonb(parse_caps(caps))
    if alert_thresholds is not None:
        changes["alert_thresholds"] = list(parse_thresholds(alert_thresholds))
    if not changes:
        return None
    assignments = ", ".join(f"{column} = {column} || %({column})s" if column == "alias_caps"
                            else f"{column} = %({column})s" for column in changes)
    query = f"UPDATE budget_settings SET {assignments}, updated_at = now(), updated_by = %(by)s WHERE id"
    return query, {**changes, "by": pg_text(by)}


def update_settings(conn: psycopg.Connection[Any], by: str = "ralexctl", **changes: Any) -> BudgetSettings:
    """Change budget settings live: the proxy applies them on its next request."""
    update = settings_update(by=by, **changes)
    if update is not None:
        with conn.transaction():
            conn.execute(*update)
    return read_settings(conn)


# --- ledger rows -----------------------------------------------------------------------------

LEDGER_COLUMNS: Final = tuple(f.name for f in dataclasses.fields(LedgerRow))
INSERT_LEDGER: Final = (
    f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(LEDGER_COLUMNS))}) ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in LEDGER_COLUMNS if c != "request_id")
    + " WHERE ledger.status = 'interrupted' AND EXCLUDED.status <> 'interrupted'"
)
"""A request's row, once: a replay of the same row changes nothing, but a row charged at the hold because
its proxy died ('interrupted') gives way to the request's real row when that turns up (a replica's journal
replayed after a sweeper charged its holds): a duplicate never drops the real cost."""
SPENT_ON_DAY: Final = "SELECT spent_usd FROM daily_totals WHERE budget_day = %s"
SPENT_BY_KEY_ON_DAY: Final = "SELECT key_name, sum(spent_usd) FROM daily_breakdown WHERE budget_day = %s GROUP BY 1"


def row_values(row: LedgerRow) -> tuple[Any, ...]:
    """The INSERT parameters of a row: the one place ledger text is written, so each text value goes
    through :func:`ralex.sinks.pg_text` (the reason and the error quote the request; Postgres refuses
    NUL and lone surrogates). A row is never refused for what its text says."""
    return tuple(pg_text(v) if isinstance(v := getattr(row, name), str) else v for name in LEDGER_COLUMNS)


def row_record(row: LedgerRow) -> Jsonb:
    """A row as the jsonb a reservation keeps (the row it leaves if its replica dies): its text through
    :func:`ralex.sinks.pg_text`, as :func:`row_values` writes it (jsonb refuses NUL as text does)."""
    return Jsonb({name: pg_text(v) if isinstance(v, str) else v for name, v in row_to_json(row).items()})


def insert_rows(conn: psycopg.Connection[Any], rows: Iterable[LedgerRow]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT_LEDGER, [row_values(r) for r in rows])


def spent_on(conn: psycopg.Connection[Any], day: date) -> float:
    row = conn.execute(SPENT_ON_DAY, (day,)).fetchone()
    return float(row[0]) if row else 0.0


def rows_for_day(conn: psycopg.Connection[Any], day: date) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM ledger WHERE budget_day = %s ORDER BY ts", (day,)).fetchall()


# --- prices ----------------------------------------------------------------------------------

UPSERT_PRICE: Final = (
    "INSERT INTO model_prices (model, prompt_usd_per_token, completion_usd_per_token, context_length, source,"
    " fetched_at) VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (model) DO UPDATE SET"
    " prompt_usd_per_token = EXCLUDED.prompt_usd_per_token,"
    " completion_usd_per_token = EXCLUDED.completion_usd_per_token,"
    " context_length = EXCLUDED.context_length, source = EXCLUDED.source, fetched_at = now()"
)


# --- read side (exporter, CLI) -----------------------------------------------------------------

DAY_TOTALS: Final = "SELECT spent_usd, requests, refusals, errors, fallbacks FROM daily_totals WHERE budget_day = %s"
"""One budget day's totals (no row: nothing happened that day). Which day is "today" is decided in
Python (:func:`ralex.budget.day_window`), the same way the proxy decides it."""

BREAKDOWN: Final = (
    "SELECT alias_routed, upstream_model, route_kind, status, fallback, requests, spent_usd, key_name"
    " FROM daily_breakdown WHERE budget_day = %s"
)
LAST_HOUR_SPEND: Final = (
    "SELECT coalesce(sum(cost_usd), 0) FROM ledger WHERE ts > %s::timestamptz - interval '1 hour'"
)
WRITE_LAG: Final = (
    "SELECT coalesce(max(extract(epoch FROM recorded_at - ts)), 0),"
    " extract(epoch FROM now() - max(recorded_at)) FROM ledger WHERE recorded_at > now() - interval '5 minutes'"
)
CROSSINGS_ON_DAY: Final = "SELECT threshold FROM alert_crossings WHERE budget_day = %s"
CROSSING_FIGURES_ON_DAY: Final = (
    "SELECT threshold, spent_usd, limit_usd FROM alert_crossings WHERE budget_day = %s ORDER BY threshold"
)
RECORD_CROSSING: Final = (
    "INSERT INTO alert_crossings (budget_day, threshold, crossed_at, spent_usd, limit_usd)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
SPEND_GROUPS: Final = {"alias": "alias_routed", "model": "upstream_model", "reason": "route_kind", "key": "key_name",
                        "day": "''"}


def spend_query(by: str) -> str:
    """Spend per budget day (the last N up to a given day, never a later one: a timezone moved east and back
    leaves rows on tomorrow's date) grouped by alias, model or routing reason. Parameters: the day, N."""
    column = SPEND_GROUPS[by]
    return (
        f"SELECT budget_day, {column} AS key, coalesce(sum(requests) FILTER (WHERE status <> 'refused'), 0),"
        " coalesce(sum(requests) FILTER (WHERE status = 'refused'), 0), sum(spent_usd)"
        " FROM daily_breakdown WHERE budget_day > %(day)s - %(days)s::int AND budget_day <= %(day)s"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )


# --- client keys -------------------------------------------------------------------------------

SELECT_KEYS: Final = (
    "SELECT name, key_hash, daily_budget_usd, created_at, revoked_at FROM client_keys ORDER BY created_at, name"
)
INSERT_KEY: Final = (
    "INSERT INTO client_keys (name, key_hash, daily_budget_usd) VALUES (%s, %s, %s)"
    " RETURNING name, key_hash, daily_budget_usd, created_at, revoked_at"
)
REVOKE_KEY: Final = (
    "UPDATE client_keys SET revoked_at = coalesce(revoked_at, now()), updated_at = now() WHERE name = %s"
    " RETURNING name, key_hash, daily_budget_usd, created_at, revoked_at"
)
SET_KEY_BUDGET: Final = (
    "UPDATE client_keys SET daily_budget_usd = %s, updated_at = now() WHERE name = %s AND revoked_at IS NULL"
    " RETURNING name, key_hash, daily_budget_usd, created_at, revoked_at"
)
ACTIVE_KEYS: Final = "SELECT name, daily_budget_usd FROM client_keys WHERE revoked_at IS NULL"
"""The exporter's keys and sub-budgets (bounded by the keys the operator created)."""


def key_from_row(row: Sequence[Any]) -> ClientKey:
    return ClientKey(name=row[0], key_hash=row[1], daily_budget=float(row[2]) if row[2] is not None else None,
                     created_at=row[3], revoked_at=row[4])


def ensure_reader_role(conn: psycopg.Connection[Any], role: str, password: str) -> None:
    """A login role that can only read the ledger (for the exporter)."""
    with conn.transaction():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        ident = psycopg.sql.Identifier(role)
        verb = "ALTER" if exists else "CREATE"
        conn.execute(psycopg.sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(ident, psycopg.sql.Literal(password)))
        conn.execute(psycopg.sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(ident))
        conn.execute(psycopg.sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(ident))
        conn.execute(psycopg.sql.SQL(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(ident))
