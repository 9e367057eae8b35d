-- Reservations shared by every proxy replica (RALEX_RESERVATIONS=shared): a team on one budget.
--
-- budget_scope holds, per budget day, what is spent and what is held by requests in flight: one row
-- for the day itself (scope '') and one per key name (a client key, 'agent', 'operator'). Admission
-- is one call of ralex_reserve: a conditional UPDATE per scope, always the day first, then the key,
-- so no two replicas can jointly pass a limit and no two admissions wait on each other in a cycle.
-- Settling is the ledger itself: a request's ledger row, once inserted, moves its hold to spent in
-- the same transaction (trigger ledger_to_totals_scope below), so the ledger's primary key makes
-- each settle happen exactly once, whichever replica, journal replay or sweeper writes the row.
--
-- Locks are always taken in one order: daily_totals (the day's row), then the day's scope, then the
-- key's. Triggers fire in name order; ledger_to_totals_scope sorts after ledger_to_totals.

CREATE TABLE budget_scope (
    budget_day  date           NOT NULL,
    scope       text           NOT NULL,
    spent_usd   numeric(14, 8) NOT NULL DEFAULT 0,
    held_usd    numeric(14, 8) NOT NULL DEFAULT 0 CHECK (held_usd >= 0),
    PRIMARY KEY (budget_day, scope)
);

-- One row per request in flight: its hold, who holds it, and the row it leaves if it never settles
-- (the write-ahead record a sweeper charges when its replica died). A hold still here past expires_at
-- (its replica charges a request that never reports back well before) is a leak, e.g. a release that
-- found Postgres away: any replica gives it back, and the request's ledger row, if one comes, still
-- counts its cost.
CREATE TABLE reservation (
    request_id     uuid PRIMARY KEY,
    budget_day     date           NOT NULL,
    key_name       text           NOT NULL,
    amount_usd     numeric(14, 8) NOT NULL CHECK (amount_usd >= 0),
    replica        text           NOT NULL,
    generation_id  text,
    record         jsonb          NOT NULL,
    created_at     timestamptz    NOT NULL DEFAULT now(),
    expires_at     timestamptz    NOT NULL
);
CREATE INDEX reservation_expires_idx ON reservation (expires_at);
CREATE INDEX reservation_replica_idx ON reservation (replica);

-- Every replica that runs or ran: a replica holds the advisory lock ralex_replica_lock(id) for as long
-- as its process lives, so whoever can take that lock knows the replica is gone and settles what it
-- left: its journal (journal: the file, readable where replicas share a volume), then its holds.
CREATE TABLE proxy_replica (
    id          text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    journal     text,
    started_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION ralex_replica_lock(p_id text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT (x'7a1e0002'::bigint << 32) | (hashtext(p_id)::bigint & x'ffffffff'::bigint)
$$;

-- The day's and the key's scope rows, made from the ledger's aggregates when missing. The day's
-- daily_totals row is locked first, so no ledger row of that day lands between the sums and the
-- new rows (its trigger waits, then finds the rows).
CREATE FUNCTION ralex_scope_open(p_day date, p_key text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM budget_scope WHERE budget_day = p_day AND scope IN ('', p_key)) = 2 THEN
        RETURN;
    END IF;
    INSERT INTO daily_totals (budget_day) VALUES (p_day) ON CONFLICT DO NOTHING;
    PERFORM 1 FROM daily_totals WHERE budget_day = p_day FOR UPDATE;
    INSERT INTO budget_scope (budget_day, scope, spent_usd)
        SELECT p_day, '', spent_usd FROM daily_totals WHERE budget_day = p_day
        ON CONFLICT DO NOTHING;
    INSERT INTO budget_scope (budget_day, scope, spent_usd)
        VALUES (p_day, p_key, (SELECT coalesce(sum(spent_usd), 0) FROM daily_breakdown
                               WHERE budget_day = p_day AND key_name = p_key))
        ON CONFLICT DO NOTHING;
END $$;

-- Admission: hold p_amount if it fits the day's limit and (p_key_limit not null) the key's sub-budget.
-- Returns whether it was admitted, which budget refused it, and both scopes' figures after the call.
CREATE FUNCTION ralex_reserve(p_id uuid, p_day date, p_key text, p_amount numeric, p_day_limit numeric,
                              p_key_limit numeric, p_replica text, p_record jsonb, p_ttl_seconds double precision)
RETURNS TABLE (admitted boolean, refused_by text, day_spent numeric, day_held numeric, key_spent numeric,
               key_held numeric) LANGUAGE plpgsql AS $$
DECLARE
    d budget_scope%ROWTYPE;
    k budget_scope%ROWTYPE;
BEGIN
    PERFORM ralex_scope_open(p_day, p_key);
    UPDATE budget_scope SET held_usd = held_usd + p_amount
        WHERE budget_day = p_day AND scope = '' AND spent_usd + held_usd + p_amount <= p_day_limit
        RETURNING * INTO d;
    IF NOT FOUND THEN
        SELECT * INTO d FROM budget_scope WHERE budget_day = p_day AND scope = '';
        SELECT * INTO k FROM budget_scope WHERE budget_day = p_day AND scope = p_key;
        RETURN QUERY SELECT false, 'day'::text, d.spent_usd, d.held_usd, k.spent_usd, k.held_usd;
        RETURN;
    END IF;
    UPDATE budget_scope SET held_usd = held_usd + p_amount
        WHERE budget_day = p_day AND scope = p_key
          AND (p_key_limit IS NULL OR spent_usd + held_usd + p_amount <= p_key_limit)
        RETURNING * INTO k;
    IF NOT FOUND THEN
        UPDATE budget_scope SET held_usd = held_usd - p_amount WHERE budget_day = p_day AND scope = ''
            RETURNING * INTO d;
        SELECT * INTO k FROM budget_scope WHERE budget_day = p_day AND scope = p_key;
        RETURN QUERY SELECT false, 'key'::text, d.spent_usd, d.held_usd, k.spent_usd, k.held_usd;
        RETURN;
    END IF;
    INSERT INTO reservation (request_id, budget_day, key_name, amount_usd, replica, record, expires_at)
        VALUES (p_id, p_day, p_key, p_amount, p_replica, p_record, now() + make_interval(secs => p_ttl_seconds));
    RETURN QUERY SELECT true, NULL::text, d.spent_usd, d.held_usd, k.spent_usd, k.held_usd;
END $$;

-- A request's ledger row settles its hold (if it had one) and counts its cost in its day's scopes.
-- Without scope rows for that day (a single proxy keeping its book in memory) there is nothing to do.
CREATE FUNCTION ralex_ledger_to_scope() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r reservation%ROWTYPE;
    day date := NEW.budget_day;
    who text := NEW.key_name;
    held numeric := 0;
    delta numeric := NEW.cost_usd;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        delta := NEW.cost_usd - OLD.cost_usd;
    ELSE
        DELETE FROM reservation WHERE request_id = NEW.request_id RETURNING * INTO r;
        IF FOUND THEN
            day := r.budget_day;
            who := r.key_name;
            held := r.amount_usd;
        END IF;
    END IF;
    UPDATE budget_scope SET held_usd = greatest(0, held_usd - held), spent_usd = spent_usd + delta
        WHERE budget_day = day AND scope = '';
    UPDATE budget_scope SET held_usd = greatest(0, held_usd - held), spent_usd = spent_usd + delta
        WHERE budget_day = day AND scope = who;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_to_totals_scope AFTER INSERT OR UPDATE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ralex_ledger_to_scope();

-- What one ledger row adds to the day's totals and breakdown (sign 1), or takes back (sign -1): the
-- one place both are counted, for inserted rows and for rows replaced.
CREATE FUNCTION ralex_count_row(r ledger, sign integer) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO daily_totals AS t (budget_day, spent_usd, requests, refusals, errors, fallbacks, updated_at)
    VALUES (r.budget_day, sign * r.cost_usd,
            sign * (r.status IN ('ok', 'abandoned', 'cancelled', 'interrupted'))::int,
            sign * (r.status = 'refused')::int, sign * (r.status = 'error')::int, sign * r.fallback::int, now())
    ON CONFLICT (budget_day) DO UPDATE SET
        spent_usd = t.spent_usd + EXCLUDED.spent_usd,
        requests  = t.requests + EXCLUDED.requests,
        refusals  = t.refusals + EXCLUDED.refusals,
        errors    = t.errors + EXCLUDED.errors,
        fallbacks = t.fallbacks + EXCLUDED.fallbacks,
        updated_at = now();
    INSERT INTO daily_breakdown AS b (budget_day, key_name, alias_routed, upstream_model, route_kind, status,
                                      fallback, requests, spent_usd)
    VALUES (r.budget_day, r.key_name, coalesce(r.alias_routed, ''), coalesce(r.upstream_model, ''),
            r.route_kind, r.status, r.fallback, sign, sign * r.cost_usd)
    ON CONFLICT (budget_day, key_name, alias_routed, upstream_model, route_kind, status, fallback) DO UPDATE SET
        requests  = b.requests + EXCLUDED.requests,
        spent_usd = b.spent_usd + EXCLUDED.spent_usd;
END $$;

CREATE OR REPLACE FUNCTION ralex_ledger_to_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ralex_count_row(NEW, 1);
    RETURN NULL;
END $$;

-- A row charged at its hold because its replica died ('interrupted') is replaced by the request's real
-- row when that turns up later (a journal replayed after the sweep): the aggregates follow the change.
CREATE FUNCTION ralex_ledger_replaced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ralex_count_row(OLD, -1);
    PERFORM ralex_count_row(NEW, 1);
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_replaced AFTER UPDATE ON ledger FOR EACH ROW EXECUTE FUNCTION ralex_ledger_replaced();

-- A hold taken for a request that was then never forwarded (its client left while it was admitted).
CREATE FUNCTION ralex_release(p_id uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r reservation%ROWTYPE;
BEGIN
    DELETE FROM reservation WHERE request_id = p_id RETURNING * INTO r;
    IF FOUND THEN
        UPDATE budget_scope SET held_usd = greatest(0, held_usd - r.amount_usd)
            WHERE budget_day = r.budget_day AND scope = '';
        UPDATE budget_scope SET held_usd = greatest(0, held_usd - r.amount_usd)
            WHERE budget_day = r.budget_day AND scope = r.key_name;
    END IF;
END $$;
