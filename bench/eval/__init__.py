"""Evaluation of a frozen encoder: feature extraction, kNN, the linear probe (with its L-BFGS
solver), transfer and diagnostics. Nothing here trains the encoder or sees its training."""
