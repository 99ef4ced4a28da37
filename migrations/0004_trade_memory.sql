-- The memory: what the engine did, what happened after, and what it learned from it.
-- Money is numeric; ratios and basis points are double precision; feature vectors real[].

CREATE TABLE pattern_library (
    pattern_id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Centre of the cluster of similar entry setups, in the entry_embedding space.
    centroid                real[]      NOT NULL CHECK (cardinality(centroid) > 0),
    regime                  text,
    occurrences             integer     NOT NULL DEFAULT 0 CHECK (occurrences >= 0),
    wins                    integer     NOT NULL DEFAULT 0 CHECK (wins >= 0),
    losses                  integer     NOT NULL DEFAULT 0 CHECK (losses >= 0),
    win_rate                double precision NOT NULL DEFAULT 0 CHECK (win_rate BETWEEN 0 AND 1),
    avg_profit_bps          double precision NOT NULL DEFAULT 0,
    avg_hold                interval,
    sharpe                  double precision,
    max_drawdown_bps        double precision CHECK (max_drawdown_bps >= 0),
    profit_factor           double precision CHECK (profit_factor >= 0),
    -- How far the statistics can be trusted (sample size, stability), 0..1.
    reliability             double precision NOT NULL DEFAULT 0 CHECK (reliability BETWEEN 0 AND 1),
    sample_adequate         boolean     NOT NULL DEFAULT false,
    optimal_size_multiplier numeric     CHECK (optimal_size_multiplier > 0),
    optimal_exit_threshold  double precision,
    first_seen_at           timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    -- Breakeven trades count as occurrences but neither wins nor losses.
    CONSTRAINT pattern_library_outcomes_within_occurrences CHECK (wins + losses <= occurrences)
);
COMMENT ON TABLE pattern_library IS
    'Clusters of similar entry setups and how they turned out: occurrences, win rate, profit, reliability, best size.';
CREATE INDEX pattern_library_win_rate_idx ON pattern_library (win_rate);
CREATE INDEX pattern_library_reliable_idx ON pattern_library (reliability) WHERE sample_adequate;

CREATE TABLE trade_memory (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mode              text        NOT NULL CONSTRAINT trade_memory_mode_check CHECK (mode IN ('replay', 'shadow', 'live')),
    exchange          text        NOT NULL CHECK (exchange <> ''),
    symbol            text        NOT NULL CHECK (symbol <> ''),
    direction         text        NOT NULL DEFAULT 'long' CONSTRAINT trade_memory_direction_check
                                  CHECK (direction IN ('long', 'short')),
    entry_time        timestamptz NOT NULL,
    exit_time         timestamptz NOT NULL,
    entry_price       numeric     NOT NULL CHECK (entry_price > 0),
    exit_price        numeric     NOT NULL CHECK (exit_price > 0),
    quantity          numeric     NOT NULL CHECK (quantity > 0),
    -- 0.5, 1 or 1.5 from the agent's action, possibly scaled down by the risk gate.
    size_multiplier   numeric     NOT NULL CHECK (size_multiplier > 0),
    -- Net of fees, in the quote currency and in the account currency.
    pnl_quote         numeric     NOT NULL,
    pnl_account       numeric     NOT NULL,
    account_currency  text        NOT NULL DEFAULT 'GBP' CHECK (account_currency ~ '^[A-Z]{3,5}$'),
    pnl_bps           double precision NOT NULL,
    fees_quote        numeric     NOT NULL DEFAULT 0,
    slippage_bps      double precision NOT NULL DEFAULT 0,
    hold_duration     interval    GENERATED ALWAYS AS (exit_time - entry_time) STORED,
    -- The normalised state vector at entry and its embedding for pattern matching.
    entry_features    real[]      NOT NULL CHECK (cardinality(entry_features) > 0),
    entry_embedding   real[]      CHECK (cardinality(entry_embedding) > 0),
    exit_reason       text        NOT NULL CONSTRAINT trade_memory_exit_reason_check CHECK (exit_reason IN (
                                      'stop_loss', 'take_profit', 'time_exit', 'signal',
                                      'circuit_breaker', 'manual', 'reconciliation')),
    entry_regime      text        NOT NULL CHECK (entry_regime <> ''),
    exit_regime       text        CHECK (exit_regime <> ''),
    -- Set by the win analyzer once post-exit prices are known.
    win_quality       text        CONSTRAINT trade_memory_win_quality_check
                                  CHECK (win_quality IN ('OPTIMAL', 'EARLY_EXIT', 'LUCKY', 'MARGINAL')),
    -- Not a foreign key: trades of unregistered policies (baselines in a backtest) are memory too.
    model_version     text        NOT NULL CHECK (model_version <> ''),
    confidence        real        CHECK (confidence BETWEEN 0 AND 1),
    is_win            boolean     GENERATED ALWAYS AS (pnl_quote > 0) STORED,
    pattern_id        bigint      REFERENCES pattern_library (pattern_id),
    position_id       bigint      REFERENCES positions (id),
    entry_order_id    bigint      REFERENCES orders (id),
    exit_order_id     bigint      REFERENCES orders (id),
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT trade_memory_exit_after_entry CHECK (exit_time >= entry_time),
    -- numeric admits NaN and Infinity (NaN passes "> 0"); a trade's figures are finite.
    CONSTRAINT trade_memory_finite CHECK (
        entry_price < 'Infinity' AND exit_price < 'Infinity' AND quantity < 'Infinity'
        AND pnl_quote < 'Infinity' AND pnl_quote > '-Infinity'
        AND pnl_account < 'Infinity' AND pnl_account > '-Infinity'
        AND fees_quote < 'Infinity' AND fees_quote > '-Infinity')
);
COMMENT ON TABLE trade_memory IS
    'Every closed trade: entry state and embedding, exit and why, PnL (quote and account currency), fees, slippage, regime, model.';
CREATE INDEX trade_memory_exit_time_idx ON trade_memory (exit_time);
CREATE INDEX trade_memory_symbol_exit_time_idx ON trade_memory (symbol, exit_time);
CREATE INDEX trade_memory_model_version_idx ON trade_memory (model_version, exit_time);
CREATE INDEX trade_memory_wins_idx ON trade_memory (exit_time) WHERE is_win;
CREATE INDEX trade_memory_pattern_idx ON trade_memory (pattern_id) WHERE pattern_id IS NOT NULL;

CREATE TABLE post_exit_tracking (
    id                         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trade_id                   bigint      NOT NULL REFERENCES trade_memory (id),
    horizon                    text        NOT NULL CONSTRAINT post_exit_tracking_horizon_check
                                           CHECK (horizon IN ('1h', '4h', '24h')),
    horizon_time               timestamptz NOT NULL,
    price_at_horizon           numeric     NOT NULL CHECK (price_at_horizon > 0),
    -- Best and worst for the trade's direction, between exit and horizon.
    best_price                 numeric     NOT NULL CHECK (best_price > 0),
    best_price_at              timestamptz NOT NULL,
    worst_price                numeric     NOT NULL CHECK (worst_price > 0),
    worst_price_at             timestamptz NOT NULL,
    missed_profit_bps          double precision NOT NULL CHECK (missed_profit_bps >= 0),
    optimal_exit_time          timestamptz,
    should_have_held           boolean     NOT NULL,
    should_have_exited_earlier boolean     NOT NULL,
    tracked_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT post_exit_tracking_one_per_horizon UNIQUE (trade_id, horizon)
);
COMMENT ON TABLE post_exit_tracking IS
    'Price 1h, 4h and 24h after each exit: best and worst price, missed profit, should we have held or left sooner.';

CREATE TABLE win_analysis (
    id                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trade_id              bigint      NOT NULL UNIQUE REFERENCES trade_memory (id),
    win_quality           text        NOT NULL CONSTRAINT win_analysis_win_quality_check
                                      CHECK (win_quality IN ('OPTIMAL', 'EARLY_EXIT', 'LUCKY', 'MARGINAL')),
    -- Share of the favourable move (up to the best post-exit price) that the trade captured.
    captured_move_ratio   double precision CHECK (captured_move_ratio >= 0),
    missed_profit_bps     double precision CHECK (missed_profit_bps >= 0),
    -- 0 = pure luck, 1 = the setup did what the model expected.
    skill_score           double precision CHECK (skill_score BETWEEN 0 AND 1),
    regime_aligned        boolean,
    -- Feature name -> contribution to the decision, for the features that carried it.
    contributing_features jsonb       NOT NULL DEFAULT '{}'::jsonb,
    confidence_boost      double precision NOT NULL DEFAULT 0 CHECK (confidence_boost BETWEEN 0 AND 1),
    lessons               text,
    analyzed_at           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE win_analysis IS
    'Why a winning trade won and how well: win quality, share of the move captured, skill versus luck.';
CREATE INDEX win_analysis_win_quality_idx ON win_analysis (win_quality);

CREATE TABLE loss_analysis (
    id                     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trade_id               bigint      NOT NULL UNIQUE REFERENCES trade_memory (id),
    primary_failure_reason text        NOT NULL CONSTRAINT loss_analysis_primary_failure_reason_check
                                       CHECK (primary_failure_reason IN (
                                           'regime_change', 'stop_too_tight', 'stop_too_wide',
                                           'adverse_selection', 'insufficient_confirmation',
                                           'costs_exceeded_move')),
    secondary_reasons      text[]      NOT NULL DEFAULT '{}' CONSTRAINT loss_analysis_secondary_reasons_check
                                       CHECK (secondary_reasons <@ ARRAY[
                                           'regime_change', 'stop_too_tight', 'stop_too_wide',
                                           'adverse_selection', 'insufficient_confirmation',
                                           'costs_exceeded_move']::text[]),
    severity               text        NOT NULL CONSTRAINT loss_analysis_severity_check
                                       CHECK (severity IN ('minor', 'moderate', 'severe', 'critical')),
    preventable            boolean     NOT NULL,
    corrective_action      text,
    -- Names of the features that pointed the wrong way at entry.
    misleading_features    text[]      NOT NULL DEFAULT '{}',
    -- How much to lower confidence for setups like this one, 0..1.
    confidence_penalty     double precision NOT NULL DEFAULT 0 CHECK (confidence_penalty BETWEEN 0 AND 1),
    regime_changed         boolean     NOT NULL,
    entry_regime           text,
    exit_regime            text,
    stop_distance_bps      double precision CHECK (stop_distance_bps >= 0),
    adverse_move_bps       double precision,
    detail                 jsonb       NOT NULL DEFAULT '{}'::jsonb,
    analyzed_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE loss_analysis IS
    'Why a losing trade lost: primary failure reason, severity, whether preventable, what to change.';
CREATE INDEX loss_analysis_primary_failure_reason_idx ON loss_analysis (primary_failure_reason);
CREATE INDEX loss_analysis_preventable_idx ON loss_analysis (analyzed_at) WHERE preventable;

CREATE TABLE model_performance (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_version       text        NOT NULL CHECK (model_version <> ''),
    day                 date        NOT NULL,
    trades              integer     NOT NULL DEFAULT 0 CHECK (trades >= 0),
    wins                integer     NOT NULL DEFAULT 0 CHECK (wins >= 0),
    losses              integer     NOT NULL DEFAULT 0 CHECK (losses >= 0),
    win_rate            double precision CHECK (win_rate BETWEEN 0 AND 1),
    pnl_quote           numeric     NOT NULL DEFAULT 0,
    pnl_account         numeric     NOT NULL DEFAULT 0,
    fees_quote          numeric     NOT NULL DEFAULT 0,
    avg_profit_bps      double precision,
    sharpe              double precision,
    sortino             double precision,
    calmar              double precision,
    max_drawdown_pct    double precision CHECK (max_drawdown_pct >= 0),
    profit_factor       double precision CHECK (profit_factor >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT model_performance_model_day_unique UNIQUE (model_version, day),
    CONSTRAINT model_performance_outcomes_within_trades CHECK (wins + losses <= trades)
);
COMMENT ON TABLE model_performance IS
    'Per model version and UTC day: trades, win rate, PnL, Sharpe, Sortino, Calmar, drawdown, profit factor.';
CREATE INDEX model_performance_day_idx ON model_performance (day);
