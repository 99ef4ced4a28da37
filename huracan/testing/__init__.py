"""Test tooling that ships with the package: the loopback exchange emulator."""
