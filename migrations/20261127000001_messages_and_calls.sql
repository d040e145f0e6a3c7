-- Channel messages (SPEC "Messages service"): newest-first keyset pages per channel.
CREATE TABLE IF NOT EXISTS channel_messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id  TEXT        NOT NULL,
    author      TEXT        NOT NULL,
    body        TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS channel_messages_page ON channel_messages (channel_id, id DESC);

-- Calls: the current state of each call, per tenant. Timestamps of the transitions that reporting
-- needs are kept on the row; the full history is in call_events.
CREATE TABLE IF NOT EXISTS calls (
    tenant_id     UUID        NOT NULL,
    call_id       TEXT        NOT NULL,
    state         TEXT        NOT NULL,
    from_number   TEXT        NOT NULL,
    to_number     TEXT        NOT NULL,
    initiated_at  TIMESTAMPTZ NOT NULL,
    answered_at   TIMESTAMPTZ,
    ended_at      TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, call_id)
);
-- GET /api/v1/reporting/calls: newest first, optionally one state; keyset on (initiated_at, call_id).
CREATE INDEX IF NOT EXISTS calls_page ON calls (tenant_id, initiated_at DESC, call_id DESC);
CREATE INDEX IF NOT EXISTS calls_page_by_state ON calls (tenant_id, state, initiated_at DESC, call_id DESC);

CREATE TABLE IF NOT EXISTS call_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       UUID        NOT NULL,
    call_id         TEXT        NOT NULL,
    state           TEXT        NOT NULL,
    previous_state  TEXT,
    at              TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS call_events_by_call ON call_events (tenant_id, call_id, id);

-- The hourly rollup behind GET /api/v1/reporting/metrics, maintained in the same statement as each
-- transition. A call counts in the hour of its INITIATED event. Each tenant-hour is split over a few
-- shards (by call id) so concurrent updates of one tenant do not all queue on one row lock; the
-- reporting query sums the shards.
CREATE TABLE IF NOT EXISTS call_stats_hourly (
    tenant_id     UUID             NOT NULL,
    bucket_start  TIMESTAMPTZ      NOT NULL,
    shard         SMALLINT         NOT NULL,
    initiated     BIGINT           NOT NULL DEFAULT 0,
    answered      BIGINT           NOT NULL DEFAULT 0,
    completed     BIGINT           NOT NULL DEFAULT 0,
    failed        BIGINT           NOT NULL DEFAULT 0,
    talk_seconds  DOUBLE PRECISION NOT NULL DEFAULT 0,
    talked        BIGINT           NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, bucket_start, shard)
);
