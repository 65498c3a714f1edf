"""Parity: each method trained by the harness and by an independent reference loop."""

# Where the reference loop's views come from: its own PIL transforms in a DataLoader (parity);
# the harness's kornia pipeline (a diagnostic: what is left of a difference is the training code
# and its random streams); or "matched": the harness's views in the harness's batch order with the
# harness's random draws (augmentation, masks, noise) from the harness's initial weights (what is
# left is the training code alone). Here, not in compare.py, so that the CLI can offer the choices
# without importing torch. Each choice -> the suffix of its record's file name.
REFERENCE_VIEWS = {"pil": "", "harness": "-harness-views", "matched": "-matched"}
