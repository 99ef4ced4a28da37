-- Orders, their fills and the positions they build. Money, prices and quantities are numeric.
-- mode tells simulated (replay, shadow) from real (live) activity everywhere.

-- Client order ids must never repeat, across restarts too: the venue uses them to deduplicate
-- a retried submission, so they come from the database rather than from process memory.
CREATE SEQUENCE client_order_id_seq AS bigint;
COMMENT ON SEQUENCE client_order_id_seq IS
    'Source of client order ids (idempotent order submission across retries and restarts).';

CREATE TABLE orders (
    id                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_order_id    text        NOT NULL UNIQUE CHECK (client_order_id <> ''),
    exchange           text        NOT NULL CHECK (exchange <> ''),
    exchange_order_id  text        CHECK (exchange_order_id <> ''),
    symbol             text        NOT NULL CHECK (symbol <> ''),
    mode               text        NOT NULL CONSTRAINT orders_mode_check CHECK (mode IN ('replay', 'shadow', 'live')),
    side               text        NOT NULL CONSTRAINT orders_side_check CHECK (side IN ('buy', 'sell')),
    order_type         text        NOT NULL CONSTRAINT orders_type_check CHECK (order_type IN ('market', 'limit')),
    time_in_force      text        NOT NULL DEFAULT 'GTC'
                                   CONSTRAINT orders_time_in_force_check CHECK (time_in_force IN ('GTC', 'IOC', 'FOK', 'PO')),
    post_only          boolean     NOT NULL DEFAULT false,
    status             text        NOT NULL DEFAULT 'NEW' CONSTRAINT orders_status_check CHECK (status IN (
                                       'NEW', 'PENDING_SUBMIT', 'ACCEPTED', 'PARTIALLY_FILLED', 'FILLED',
                                       'PENDING_CANCEL', 'CANCELED', 'REJECTED', 'EXPIRED', 'UNKNOWN')),
    quantity           numeric     NOT NULL CHECK (quantity > 0),
    limit_price        numeric     CHECK (limit_price > 0),
    filled_quantity    numeric     NOT NULL DEFAULT 0 CHECK (filled_quantity >= 0),
    average_fill_price numeric     CHECK (average_fill_price > 0),
    -- Why the order exists: entry, exit:stop_loss, reconciliation...
    reason             text        NOT NULL CHECK (reason <> ''),
    -- The OrderIntent that produced it (action, confidence, size multiplier, risk verdict).
    intent             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The venue's words when it rejected or cancelled the order.
    venue_message      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    submitted_at       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    closed_at          timestamptz,
    CONSTRAINT orders_fill_within_quantity CHECK (filled_quantity <= quantity),
    CONSTRAINT orders_limit_has_price CHECK (order_type <> 'limit' OR limit_price IS NOT NULL),
    CONSTRAINT orders_post_only_is_limit CHECK (NOT post_only OR order_type = 'limit'),
    CONSTRAINT orders_exchange_order_id_unique UNIQUE (exchange, exchange_order_id)
);
COMMENT ON TABLE orders IS
    'Every order the engine placed (simulated or real) keyed by client_order_id, with its status as last known.';
-- Reconciliation and the order state machine look up what is still working.
CREATE INDEX orders_open_idx ON orders (exchange, symbol)
    WHERE status IN ('NEW', 'PENDING_SUBMIT', 'ACCEPTED', 'PARTIALLY_FILLED', 'PENDING_CANCEL', 'UNKNOWN');
CREATE INDEX orders_created_at_idx ON orders (created_at);

CREATE TABLE fills (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id       bigint      NOT NULL REFERENCES orders (id),
    exchange       text        NOT NULL CHECK (exchange <> ''),
    -- The venue's trade id (or the simulator's): the same execution reported twice is one fill.
    venue_trade_id text        NOT NULL CHECK (venue_trade_id <> ''),
    symbol         text        NOT NULL CHECK (symbol <> ''),
    side           text        NOT NULL CONSTRAINT fills_side_check CHECK (side IN ('buy', 'sell')),
    price          numeric     NOT NULL CHECK (price > 0),
    quantity       numeric     NOT NULL CHECK (quantity > 0),
    -- Negative when a venue pays a maker rebate.
    fee            numeric     NOT NULL DEFAULT 0,
    fee_currency   text        NOT NULL CHECK (fee_currency <> ''),
    -- NULL when the venue does not say (some report it only on the order).
    liquidity      text        CONSTRAINT fills_liquidity_check CHECK (liquidity IN ('maker', 'taker')),
    filled_at      timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fills_venue_trade_unique UNIQUE (exchange, venue_trade_id),
    -- numeric admits NaN and Infinity (NaN passes "> 0"); neither is an execution.
    CONSTRAINT fills_finite CHECK (price < 'Infinity' AND quantity < 'Infinity' AND fee < 'Infinity' AND fee > '-Infinity')
);
COMMENT ON TABLE fills IS
    'Executions of orders: price, quantity, fee and maker/taker, one row per venue trade id.';
CREATE INDEX fills_order_id_idx ON fills (order_id);
CREATE INDEX fills_filled_at_idx ON fills (filled_at);

CREATE TABLE positions (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mode                text        NOT NULL CONSTRAINT positions_mode_check CHECK (mode IN ('replay', 'shadow', 'live')),
    exchange            text        NOT NULL CHECK (exchange <> ''),
    symbol              text        NOT NULL CHECK (symbol <> ''),
    direction           text        NOT NULL DEFAULT 'long' CONSTRAINT positions_direction_check CHECK (direction IN ('long', 'short')),
    status              text        NOT NULL DEFAULT 'open' CONSTRAINT positions_status_check CHECK (status IN ('open', 'closed')),
    quantity            numeric     NOT NULL CHECK (quantity >= 0),
    average_entry_price numeric     NOT NULL CHECK (average_entry_price > 0),
    size_multiplier     numeric     NOT NULL DEFAULT 1 CHECK (size_multiplier > 0),
    stop_loss_price     numeric     CHECK (stop_loss_price > 0),
    take_profit_price   numeric     CHECK (take_profit_price > 0),
    realised_pnl_quote  numeric     NOT NULL DEFAULT 0,
    fees_quote          numeric     NOT NULL DEFAULT 0,
    entry_order_id      bigint      REFERENCES orders (id),
    exit_order_id       bigint      REFERENCES orders (id),
    opened_at           timestamptz NOT NULL,
    closed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT positions_closed_iff_closed_at CHECK ((status = 'closed') = (closed_at IS NOT NULL)),
    CONSTRAINT positions_open_has_quantity CHECK (status = 'closed' OR quantity > 0),
    CONSTRAINT positions_closed_after_open CHECK (closed_at IS NULL OR closed_at >= opened_at)
);
COMMENT ON TABLE positions IS
    'Positions built from fills: at most one open per mode, exchange and symbol; closed ones stay as history.';
CREATE UNIQUE INDEX positions_one_open_idx ON positions (mode, exchange, symbol) WHERE status = 'open';
CREATE INDEX positions_closed_at_idx ON positions (closed_at) WHERE status = 'closed';
