"""The supervisor: builds the services, runs them as tasks, signals, sd_notify, graceful shutdown."""
