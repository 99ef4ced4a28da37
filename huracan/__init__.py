"""Huracan: a self-learning crypto trading daemon."""
