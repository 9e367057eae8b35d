-- Ralex ledger: one row per request, O(1) daily totals, live budget settings, cached prices.

CREATE TABLE budget_settings (
    id                       boolean PRIMARY KEY DEFAULT true CHECK (id),
    daily_limit_usd          numeric(12, 6) NOT NULL CHECK (daily_limit_usd >= 0),
    timezone                 text           NOT NULL,
    smart_min_remaining_usd  numeric(12, 6) NOT NULL CHECK (smart_min_remaining_usd >= 0),
    cheap_min_remaining_usd  numeric(12, 6) NOT NULL CHECK (cheap_min_remaining_usd >= 0),
    emergency_max_tokens     integer        NOT NULL CHECK (emergency_max_tokens > 0),
    updated_at               timestamptz    NOT NULL DEFAULT now(),
    updated_by               text           NOT NULL DEFAULT 'seed'
);

CREATE TABLE ledger (
    request_id          uuid PRIMARY KEY,
    ts                  timestamptz    NOT NULL,
    budget_day          date           NOT NULL,
    alias_requested     text           NOT NULL,
    alias_routed        text,
    upstream_model      text,
    reason              text           NOT NULL DEFAULT '',
    tier                text,
    status              text           NOT NULL CHECK (status IN ('ok', 'refused', 'error', 'abandoned')),
    fallback            boolean        NOT NULL DEFAULT false,
    stream              boolean        NOT NULL DEFAULT false,
    prompt_tokens       integer,
    completion_tokens   integer,
    max_tokens          integer,
    estimated_cost_usd  numeric(14, 8) NOT NULL DEFAULT 0,
    reserved_usd        numeric(14, 8) NOT NULL DEFAULT 0,
    cost_usd            numeric(14, 8) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    cost_source         text,
    latency_ms          integer,
    turn_key            text,
    session_key         text,
    error               text,
    recorded_at         timestamptz    NOT NULL DEFAULT now()
);
CREATE INDEX ledger_budget_day_idx ON ledger (budget_day);
CREATE INDEX ledger_ts_brin ON ledger USING brin (ts);

CREATE TABLE daily_totals (
    budget_day   date PRIMARY KEY,
    spent_usd    numeric(14, 8) NOT NULL DEFAULT 0,
    requests     integer        NOT NULL DEFAULT 0,
    refusals     integer        NOT NULL DEFAULT 0,
    errors       integer        NOT NULL DEFAULT 0,
    fallbacks    integer        NOT NULL DEFAULT 0,
    updated_at   timestamptz    NOT NULL DEFAULT now()
);

-- Every inserted ledger row (and only inserted ones: ON CONFLICT DO NOTHING skips the trigger)
-- lands in the day's totals, whoever writes it.
CREATE FUNCTION ralex_ledger_to_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO daily_totals AS t (budget_day, spent_usd, requests, refusals, errors, fallbacks, updated_at)
    VALUES (NEW.budget_day, NEW.cost_usd,
            (NEW.status IN ('ok', 'abandoned'))::int, (NEW.status = 'refused')::int,
            (NEW.status = 'error')::int, NEW.fallback::int, now())
    ON CONFLICT (budget_day) DO UPDATE SET
        spent_usd = t.spent_usd + EXCLUDED.spent_usd,
        requests  = t.requests + EXCLUDED.requests,
        refusals  = t.refusals + EXCLUDED.refusals,
        errors    = t.errors + EXCLUDED.errors,
        fallbacks = t.fallbacks + EXCLUDED.fallbacks,
        updated_at = now();
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_to_totals AFTER INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION ralex_ledger_to_totals();

-- A settings change wakes the proxy (LISTEN ralex_budget) so it applies on the next request.
CREATE FUNCTION ralex_notify_budget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ralex_budget', NEW.daily_limit_usd::text);
    RETURN NULL;
END $$;
CREATE TRIGGER budget_settings_notify AFTER INSERT OR UPDATE ON budget_settings
    FOR EACH ROW EXECUTE FUNCTION ralex_notify_budget();

CREATE TABLE model_prices (
    model                     text PRIMARY KEY,
    prompt_usd_per_token      numeric(16, 12) NOT NULL,
    completion_usd_per_token  numeric(16, 12) NOT NULL,
    context_length            integer,
    source                    text NOT NULL,
    fetched_at                timestamptz NOT NULL DEFAULT now()
);
