"""Market data: candle files, validation of every bar, ingestion and persistence."""
