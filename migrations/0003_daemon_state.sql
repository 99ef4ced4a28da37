-- The daemon's own bookkeeping: models, risk decisions, health, persisted flags.

CREATE TABLE model_registry (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version           text        NOT NULL UNIQUE CHECK (version <> ''),
    status            text        NOT NULL DEFAULT 'candidate' CONSTRAINT model_registry_status_check
                                  CHECK (status IN ('candidate', 'shadow', 'active', 'retired', 'rolled_back')),
    parent_version    text        REFERENCES model_registry (version),
    -- Hash of the state vector's layout: a model only runs against the features it was trained on.
    state_schema_hash text        NOT NULL CHECK (state_schema_hash <> ''),
    artifact_path     text        NOT NULL CHECK (artifact_path <> ''),
    artifact_sha256   text        CHECK (artifact_sha256 ~ '^[0-9a-f]{64}$'),
    -- Training and validation figures (walk-forward Sharpe, win rate, quality gate verdicts).
    metrics           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    notes             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    promoted_at       timestamptz,
    retired_at        timestamptz
);
COMMENT ON TABLE model_registry IS
    'Trained agent versions and their lifecycle: candidate, shadow (A/B), active (one at most), retired, rolled_back.';
-- Exactly one model trades at a time; promotion retires the old one first, in one transaction.
CREATE UNIQUE INDEX model_registry_one_active_idx ON model_registry ((true)) WHERE status = 'active';

CREATE TABLE risk_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    mode        text        NOT NULL CONSTRAINT risk_events_mode_check CHECK (mode IN ('replay', 'shadow', 'live')),
    decision    text        NOT NULL CONSTRAINT risk_events_decision_check
                            CHECK (decision IN ('rejected', 'scaled_down', 'halted', 'resumed')),
    -- snake_case code from the RiskManager, e.g. daily_loss_limit, max_heat, circuit_breaker.
    reason_code text        NOT NULL CHECK (reason_code ~ '^[a-z][a-z0-9_]*$'),
    symbol      text,
    -- The OrderIntent as the gate saw it (empty for halts that concern no order).
    intent      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    risk_score  double precision CHECK (risk_score >= 0),
    detail      text
);
COMMENT ON TABLE risk_events IS
    'Risk gate decisions other than a plain approval: rejections, scale-downs, trading halts and resumptions.';
CREATE INDEX risk_events_occurred_at_idx ON risk_events (occurred_at);
CREATE INDEX risk_events_reason_idx ON risk_events (reason_code, occurred_at);

CREATE TABLE health_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    component   text        NOT NULL CHECK (component <> ''),
    -- snake_case event name, e.g. stale_candles, error_rate_high, pattern_degraded.
    event       text        NOT NULL CHECK (event ~ '^[a-z][a-z0-9_]*$'),
    severity    text        NOT NULL CONSTRAINT health_events_severity_check
                            CHECK (severity IN ('info', 'warning', 'error', 'critical')),
    message     text        NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- What auto-remediation did about it, if anything.
    remediation text,
    resolved_at timestamptz CHECK (resolved_at >= occurred_at)
);
COMMENT ON TABLE health_events IS
    'Anomalies and health check results from the monitor, with the remediation taken and when it cleared.';
CREATE INDEX health_events_occurred_at_idx ON health_events (occurred_at);
CREATE INDEX health_events_unresolved_idx ON health_events (component, occurred_at) WHERE resolved_at IS NULL;

CREATE TABLE daemon_state (
    key        text        PRIMARY KEY CHECK (key <> ''),
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE daemon_state IS
    'Flags that survive restarts (trading state, circuit breaker, heartbeat), one JSON value per key.';
