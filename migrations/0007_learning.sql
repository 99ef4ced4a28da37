-- What the learning loop needs beyond 0004: the win analyzer's evidence (how often the setup
-- occurred, its win rate, the significance of its edge, entry and exit quality), the pattern
-- library's penalties and best hold, gross profit and loss per model and day (profit factor),
-- and the indexes that keep its pending-work queries and the user's psql queries quick.

ALTER TABLE win_analysis
    ADD COLUMN pattern_occurrences integer CHECK (pattern_occurrences >= 0),
    ADD COLUMN pattern_win_rate    double precision CHECK (pattern_win_rate BETWEEN 0 AND 1),
    -- One-sided p-value of the setup's wins against the base win rate: low = skill, high = luck.
    ADD COLUMN edge_p_value        double precision CHECK (edge_p_value BETWEEN 0 AND 1),
    -- 1 = entered at the best price of the hold window, 0 = at the worst; exit likewise over
    -- the hold window and the tracked hours after it.
    ADD COLUMN entry_quality       double precision CHECK (entry_quality BETWEEN 0 AND 1),
    ADD COLUMN exit_quality        double precision CHECK (exit_quality BETWEEN 0 AND 1);
COMMENT ON COLUMN win_analysis.pattern_occurrences IS
    'Trades of the trade''s pattern that had exited by its entry (its similar past setups when it has no pattern).';
COMMENT ON COLUMN win_analysis.pattern_win_rate IS
    'Win rate of those trades.';

-- The best price from entry to the horizon (the hold window included), at optimal_exit_time:
-- the pattern library's take-profit hint comes from it.
ALTER TABLE post_exit_tracking ADD COLUMN optimal_exit_price numeric CHECK (optimal_exit_price > 0);

ALTER TABLE pattern_library
    -- Mean confidence penalty of the pattern's analysed losses; lowers its reliability.
    ADD COLUMN confidence_penalty double precision NOT NULL DEFAULT 0
        CHECK (confidence_penalty BETWEEN 0 AND 1),
    -- Median time from entry to the best price within the post-exit horizon (the exit rules' hint).
    ADD COLUMN optimal_hold interval,
    -- The entry embedding's basis that the centroid is expressed in.
    ADD COLUMN embedding_version text NOT NULL DEFAULT '';
CREATE INDEX pattern_library_embedding_version_idx ON pattern_library (embedding_version);

ALTER TABLE model_performance
    -- Sums of the winning and (as a positive number) the losing trades' net PnL, quote currency.
    ADD COLUMN gross_profit_quote numeric NOT NULL DEFAULT 0 CHECK (gross_profit_quote >= 0),
    ADD COLUMN gross_loss_quote   numeric NOT NULL DEFAULT 0 CHECK (gross_loss_quote >= 0),
    -- Whose results: 'paper' (the decision step's paper book, every deciding version alike, the
    -- A/B comparison's) or the mode of the version's own trades in trade_memory (a replay's rows
    -- are its latest session's).
    ADD COLUMN source text NOT NULL DEFAULT 'paper'
        CONSTRAINT model_performance_source_check CHECK (source IN ('paper', 'replay', 'shadow', 'live')),
    DROP CONSTRAINT model_performance_model_day_unique,
    ADD CONSTRAINT model_performance_model_day_source_unique UNIQUE (model_version, day, source);

-- Trades the pattern library has not yet embedded and assigned: the learning loop's queue,
-- taken in exit order.
CREATE INDEX trade_memory_unlearned_idx ON trade_memory (exit_time, id) WHERE pattern_id IS NULL;
CREATE INDEX post_exit_tracking_horizon_idx ON post_exit_tracking (horizon, trade_id);
