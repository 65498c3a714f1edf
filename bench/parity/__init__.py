"""Parity: each method trained by the harness and by an independent reference loop."""

# Where the reference loop's inputs come from (torch-free, so the CLI can offer the choices):
#   pil      its own PIL transforms in a DataLoader (parity);
#   harness  the harness's kornia views (diagnostic: left are the training code and random streams);
#   matched  also the harness's batch order, per-epoch seeding and initial weights (left is the
#            training code; VAE/AASAE's reference draws extra noise per step, BYOL's target moves
#            one step apart, so for those three the draws or updates still differ after step 0).
# choice -> (suffix of the record's file name, note in the table's variant column)
REFERENCE_VIEWS = {
    "pil": ("", ""),
    "harness": ("-harness-views", "; reference fed the harness's views"),
    "matched": ("-matched", "; reference fed the harness's views, batches, draws and initial weights"),
}
