-- OpenRouter's generation id of the answer a row was settled for: the key to reconcile a row
-- with OpenRouter's own record (GET /api/v1/generation?id=...).
ALTER TABLE ledger ADD COLUMN generation_id text;

-- Two more ways a request can end: 'cancelled' (the client left mid-answer; charged what
-- OpenRouter says it generated, else the hold) and 'interrupted' (the proxy died while it was in
-- flight; charged its hold from the write-ahead journal). Both count as served requests.
ALTER TABLE ledger DROP CONSTRAINT ledger_status_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_status_check
    CHECK (status IN ('ok', 'refused', 'error', 'abandoned', 'cancelled', 'interrupted'));

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
    INSERT INTO daily_breakdown AS b (budget_day, alias_routed, upstream_model, route_kind, status, fallback,
                                      requests, spent_usd)
    VALUES (NEW.budget_day, coalesce(NEW.alias_routed, ''), coalesce(NEW.upstream_model, ''), NEW.route_kind,
            NEW.status, NEW.fallback, 1, NEW.cost_usd)
    ON CONFLICT (budget_day, alias_routed, upstream_model, route_kind, status, fallback) DO UPDATE SET
        requests  = b.requests + 1,
        spent_usd = b.spent_usd + EXCLUDED.spent_usd;
    RETURN NULL;
END $$;
