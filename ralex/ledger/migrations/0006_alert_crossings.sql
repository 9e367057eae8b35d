-- Budget alert thresholds are live settings (ralexctl budget alerts 50 80 95), and each crossing is
-- recorded once per budget day: the exporter publishes the day's crossings, so a threshold notifies
-- once a day even when a raised budget drops below it and it is crossed again.
ALTER TABLE budget_settings ADD COLUMN alert_thresholds integer[] NOT NULL DEFAULT '{50,80,95,100}';

CREATE TABLE alert_crossings (
    budget_day  date           NOT NULL,
    threshold   integer        NOT NULL,
    crossed_at  timestamptz    NOT NULL DEFAULT now(),
    spent_usd   numeric(14, 8) NOT NULL,
    limit_usd   numeric(14, 8) NOT NULL,
    PRIMARY KEY (budget_day, threshold)
);
