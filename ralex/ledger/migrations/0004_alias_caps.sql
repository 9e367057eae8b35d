-- Per-request caps changed live (`ralexctl budget cap smart 0.50`): {"alias": usd} over config/ralex.yaml.
ALTER TABLE budget_settings ADD COLUMN alias_caps jsonb NOT NULL DEFAULT '{}'::jsonb;
