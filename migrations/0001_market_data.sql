-- Market data: the closed candles every decision is made from.
-- Prices and volumes are numeric (exact decimals as the venue sends them), times timestamptz.

CREATE TABLE candles (
    exchange    text        NOT NULL CHECK (exchange <> ''),
    symbol      text        NOT NULL CHECK (symbol <> ''),
    timeframe   text        NOT NULL CONSTRAINT candles_timeframe_check CHECK (timeframe ~ '^[1-9][0-9]*[mhdw]$'),
    open_time   timestamptz NOT NULL,
    open        numeric     NOT NULL,
    high        numeric     NOT NULL,
    low         numeric     NOT NULL,
    close       numeric     NOT NULL,
    volume      numeric     NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol, timeframe, open_time),
    CONSTRAINT candles_prices_positive CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0),
    CONSTRAINT candles_range CHECK (low <= open AND low <= close AND open <= high AND close <= high),
    CONSTRAINT candles_volume_non_negative CHECK (volume >= 0),
    -- numeric admits NaN and Infinity, and NaN compares above every number, so the checks
    -- above would let a NaN bar through; high bounds the others.
    CONSTRAINT candles_finite CHECK (high < 'Infinity' AND volume < 'Infinity')
);
COMMENT ON TABLE candles IS
    'Closed OHLCV bars per exchange, symbol and timeframe (open_time is the bar start); validated on the way in.';
