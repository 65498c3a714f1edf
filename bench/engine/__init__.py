"""The engine: one run from its resolved config to its result record -- the suite's data on the
device, the augmentation pipeline, the training loop (checkpoints, resume, NaN guard, DDP) and
the scheduler that runs a suite's runs (locks, resume, rank-0 decisions)."""
