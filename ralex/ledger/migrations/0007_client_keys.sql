-- A key per client, a sub-budget per key (`ralexctl keys add laptop-claude --budget 2`).
--
-- client_keys holds operator-created keys, hashed (SHA-256 of a 256-bit random key: the plain key is
-- shown once and never stored). Every ledger row names who made the request: a client key's name,
-- 'agent' (RALEX_AGENT_KEY) or 'operator' (LITELLM_MASTER_KEY). Rows written before keys existed
-- are attributed to 'agent': the OpenCode agent was the stack's only model client, the master key
-- being the operator's admin key, so that is where nearly all of that spend came from.
CREATE TABLE client_keys (
    name              text PRIMARY KEY CHECK (name ~ '^[a-z0-9-]{1,40}$' AND name NOT IN ('agent', 'operator')),
    key_hash          text           NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    daily_budget_usd  numeric(12, 6) CHECK (daily_budget_usd >= 0),
    created_at        timestamptz    NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    updated_at        timestamptz    NOT NULL DEFAULT now()
);

-- A key added, revoked or re-budgeted by hand (psql) reaches the proxy as a settings change does.
CREATE FUNCTION ralex_notify_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ralex_budget', 'keys');
    RETURN NULL;
END $$;
CREATE TRIGGER client_keys_notify AFTER INSERT OR UPDATE OR DELETE ON client_keys
    FOR EACH STATEMENT EXECUTE FUNCTION ralex_notify_keys();

ALTER TABLE ledger ADD COLUMN key_name text NOT NULL DEFAULT 'agent';

-- The per-day breakdown gains the key, so spend per key (today's per-key spend at start, the
-- exporter, `ralexctl spend --by key`) is read from aggregates, never by scanning the ledger.
ALTER TABLE daily_breakdown ADD COLUMN key_name text NOT NULL DEFAULT 'agent';
ALTER TABLE daily_breakdown DROP CONSTRAINT daily_breakdown_pkey;
ALTER TABLE daily_breakdown ADD PRIMARY KEY (budget_day, key_name, alias_routed, upstream_model, route_kind, status,
                                             fallback);

CREATE OR REPLACE FUNCTION ralex_ledger_to_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO daily_totals AS t (budget_day, spent_usd, requests, refusals, errors, fallbacks, updated_at)
    VALUES (NEW.budget_day, NEW.cost_usd,
            (NEW.status IN ('ok', 'abandoned', 'cancelled', 'interrupted'))::int, (NEW.status = 'refused')::int,
            (NEW.status = 'error')::int, NEW.fallback::int, now())
    ON CONFLICT (budget_day) DO UPDATE SET
        spent_usd = t.spent_usd + EXCLUDED.spent_usd,
        requests  = t.requests + EXCLUDED.requests,
        refusals  = t.refusals + EXCLUDED.refusals,
        errors    = t.errors + EXCLUDED.errors,
        fallbacks = t.fallbacks + EXCLUDED.fallbacks,
        updated_at = now();
    INSERT INTO daily_breakdown AS b (budget_day, key_name, alias_routed, upstream_model, route_kind, status,
                                      fallback, requests, spent_usd)
    VALUES (NEW.budget_day, NEW.key_name, coalesce(NEW.alias_routed, ''), coalesce(NEW.upstream_model, ''),
            NEW.route_kind, NEW.status, NEW.fallback, 1, NEW.cost_usd)
    ON CONFLICT (budget_day, key_name, alias_routed, upstream_model, route_kind, status, fallback) DO UPDATE SET
        requests  = b.requests + 1,
        spent_usd = b.spent_usd + EXCLUDED.spent_usd;
    RETURN NULL;
END $$;
