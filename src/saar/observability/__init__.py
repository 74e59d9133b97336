"""Metrics and structured logs, fed by the decision trace and the adapters."""
