"""Parity: each method trained by the harness and by an independent reference loop."""

# Where the reference loop's views come from: its own PIL transforms in a DataLoader (parity), or
# the harness's kornia pipeline (a diagnostic: what is left of a difference is the training code).
# Here, not in compare.py, so that the CLI can offer the choices without importing torch.
REFERENCE_VIEWS = ("pil", "harness")
