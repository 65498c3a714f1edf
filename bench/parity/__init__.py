"""Parity: each method trained by the harness and by an independent reference loop."""
