"""Real-time decisions: features for each closed bar, one batched forward pass, OrderIntents."""
