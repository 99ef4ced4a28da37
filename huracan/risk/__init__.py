"""The risk gate: RiskManager (pure limits and sizing), the trading state, and the gate task
that is the only consumer of the intent queue."""
