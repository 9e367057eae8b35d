-- OpenRouter's generation id of the answer a row was settled for: the key to reconcile a row
-- with OpenRouter's own record (GET /api/v1/generation?id=...).
ALTER TABLE ledger ADD COLUMN generation_id text;
