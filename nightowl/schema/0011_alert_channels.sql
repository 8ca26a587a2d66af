-- Alert channels and per-channel delivery state (nightowl/alerts/).
--
-- The outbox itself is 0010_issue_lifecycle.sql's (the drain writes one row
-- per issue event in the transaction that changes the issue).

-- Set by the dispatcher when it has made the row's delivery rows (fan-out):
-- rows still NULL are found through the partial index.
ALTER TABLE nightowl_alert_outbox ADD COLUMN IF NOT EXISTS fanned_out_at timestamptz;
CREATE INDEX IF NOT EXISTS nightowl_alert_outbox_unfanned_idx
    ON nightowl_alert_outbox (id) WHERE fanned_out_at IS NULL;

-- Where alerts go.  settings (jsonb) by type:
--   webhook: url, secret          slack / discord: url
--   email:   to (list), from, smtp_host, smtp_port, tls ('starttls'|'ssl'|'none'),
--            user, password_env (the NAME of an environment variable), ca_file
-- events: NULL = every event, else the events this channel receives.
-- rate_limit alerts per rate_window_seconds; beyond it, one digest.
CREATE TABLE nightowl_alert_channels (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    type text NOT NULL CHECK (type IN ('webhook', 'slack', 'discord', 'email')),
    settings jsonb NOT NULL DEFAULT '{}',
    events text[],
    enabled boolean NOT NULL DEFAULT true,
    rate_limit integer NOT NULL DEFAULT 10 CHECK (rate_limit > 0),
    rate_window_seconds integer NOT NULL DEFAULT 300 CHECK (rate_window_seconds > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (alert, channel): the delivery state machine of
-- nightowl/alerts/outbox.py.  delivery_id is sent as X-Nightowl-Delivery and
-- never changes across retries.  status: 'pending' | 'sent' | 'dead' |
-- 'digested' (folded into the digest row digest_id).  A pending row whose
-- lease_until is in the future is being sent by the agent holding lease_token.
CREATE TABLE nightowl_alert_deliveries (
    id bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    channel_id bigint NOT NULL REFERENCES nightowl_alert_channels (id) ON DELETE CASCADE,
    outbox_id bigint REFERENCES nightowl_alert_outbox (id) ON DELETE CASCADE,
    kind text NOT NULL DEFAULT 'alert',       -- 'alert' | 'digest'
    event text NOT NULL,
    payload jsonb,                            -- digests only (alerts read the outbox)
    status text NOT NULL DEFAULT 'pending',
    held boolean NOT NULL DEFAULT false,      -- held back by the rate limit
    digest_id bigint REFERENCES nightowl_alert_deliveries (id) ON DELETE SET NULL,
    attempts integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    first_claimed_at timestamptz,
    lease_until timestamptz,
    lease_token uuid,
    sent_at timestamptz,
    last_error text,
    UNIQUE (outbox_id, channel_id)
);
CREATE INDEX nightowl_alert_deliveries_due_idx
    ON nightowl_alert_deliveries (channel_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX nightowl_alert_deliveries_window_idx
    ON nightowl_alert_deliveries (channel_id, first_claimed_at);
