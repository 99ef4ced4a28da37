-- A fill's fee in the quote currency as the engine counted it when the fill came in (a fee in a
-- third currency, such as BNB, is priced at that moment). Restoring positions after a restart
-- reads it back rather than pricing the fee again at a later rate. NULL for fills recorded
-- before this column existed.
ALTER TABLE fills ADD COLUMN fee_quote numeric
    CONSTRAINT fills_fee_quote_finite CHECK (fee_quote < 'Infinity' AND fee_quote > '-Infinity');
COMMENT ON COLUMN fills.fee_quote IS 'The fee in quote currency as counted at the fill (third-currency fees priced then).';
