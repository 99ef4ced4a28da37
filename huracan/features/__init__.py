"""The agent's state: market features computed from OHLCV (whole arrays for training, one bar at
a time live, by the same code), the context block, the schema and the running normaliser."""
