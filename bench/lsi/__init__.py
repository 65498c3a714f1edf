"""Latent space interpolation (Liu et al. 2018) as a training-time augmentation of a supervised
classifier, compared with no augmentation, the suite's standard augmentation and pixel mixup:
a second kind of suite in the same harness, with its own leaderboard and published numbers.

Modules, in dataflow order: `suites` (LSI_SUITES, the rows and the protocol config), `data`
(train/test splits and label subsets), `generators` (AAE/VAE trained by the harness, cached),
`mixing` (inter-class pairs, interpolation, mixup, soft targets), `classifier` (the row's
model, trained by the harness's loop), `holes` (hole measures, interpolation pictures),
`runner` (a suite's runs), `report` (leaderboard.html/.md/.csv), `check` (publish, check,
calibrate), `cli` (what `bench run/check/list` hand over). The protocol: docs/protocols.md §6.
"""
