"""Reinforcement learning: the vectorised training environment, PPO, checkpoints and the model
registry."""
