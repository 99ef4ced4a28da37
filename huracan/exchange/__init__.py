"""The exchange side: ccxt adapter, replay venue, and pointing ccxt at the loopback emulator."""
