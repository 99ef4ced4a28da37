"""Domain types shared by every package: candles, timeframes. Frozen, slotted, no I/O."""
