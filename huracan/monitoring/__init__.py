"""Health checks, anomaly detection, auto-remediation, status and metrics."""
