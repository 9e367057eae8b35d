-- Why each request went where it went, and per-day aggregates the exporter reads in O(1).

ALTER TABLE ledger ADD COLUMN route_kind text NOT NULL DEFAULT '';

CREATE TABLE daily_breakdown (
    budget_day      date    NOT NULL,
    alias_routed    text    NOT NULL,
    upstream_model  text    NOT NULL,
    route_kind      text    NOT NULL,
    status          text    NOT NULL,
    fallback        boolean NOT NULL,
    requests        integer NOT NULL DEFAULT 0,
    spent_usd       numeric(14, 8) NOT NULL DEFAULT 0,
    PRIMARY KEY (budget_day, alias_routed, upstream_model, route_kind, status, fallback)
);

CREATE INDEX ledger_recorded_at_idx ON ledger (recorded_at);

CREATE OR REPLACE FUNCTION ralex_ledger_to_totals() RETURNS trigger LANGUAGE plpgsql AS $$
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
    INSERT INTO daily_breakdown AS b (budget_day, alias_routed, upstream_model, route_kind, status, fallback,
                                      requests, spent_usd)
    VALUES (NEW.budget_day, coalesce(NEW.alias_routed, ''), coalesce(NEW.upstream_model, ''), NEW.route_kind,
            NEW.status, NEW.fallback, 1, NEW.cost_usd)
    ON CONFLICT (budget_day, alias_routed, upstream_model, route_kind, status, fallback) DO UPDATE SET
        requests  = b.requests + 1,
        spent_usd = b.spent_usd + EXCLUDED.spent_usd;
    RETURN NULL;
END $$;

-- Rows already in the ledger (from before this migration) count in the breakdown too.
INSERT INTO daily_breakdown (budget_day, alias_routed, upstream_model, route_kind, status, fallback, requests, spent_usd)
SELECT budget_day, coalesce(alias_routed, ''), coalesce(upstream_model, ''), route_kind, status, fallback,
       count(*), sum(cost_usd)
FROM ledger GROUP BY 1, 2, 3, 4, 5, 6;
