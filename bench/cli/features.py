"""`python -m bench features RUN_DIR --split train|test [--dataset NAME] --out F.npz`

Re-derives a run's frozen features from its final checkpoint with the very code the
evaluation used (same subsets, same normalization, eval mode) and writes them with their
labels to an .npz. The digest stored in result.json at evaluation time is compared with the
exported array, so the file provably holds the features the stored metrics were computed on.
On another machine (or thread count, or a GPU) the digest differs by float summation order
alone; then the stored fingerprint (projections of the features on fixed random directions)
must agree within FINGERPRINT_RTOL of the features' scale, and the output says which held.
Exit 0 when either holds, 1 when the features differ.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.cli.common import positive_int
from bench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory: <out>/runs/<run_id>")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--dataset", help="the suite's dataset (default) or one of its transfer targets")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write (refuses to overwrite)")
    p.add_argument("--data-dir", help="where datasets are looked for")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads (default: the count the run was made with, for bit-identical features)")


def main(args: argparse.Namespace) -> int:
    # imported here, not at the top: `bench --help` and the other commands stay light
    from bench.results import store
    from bench.threads import cpu_threads
    from bench.engine.data import SuiteData
    from bench.engine.execute import build_method, pick_device
    from bench.engine.train import CHECKPOINT, load_checkpoint
    from bench.eval.evaluate import (FINGERPRINT_RTOL, extract_features, features_digest, features_fingerprint,
                                     fingerprint_difference)
    from bench.suites import suite_of

    result = store.read_result(args.run_dir)
    if result is None:
        raise UserError(f"no {store.RESULT} in '{args.run_dir}'; pass a directory <out>/runs/<run_id>")
    if not result.ok:
        raise UserError(f"run {result.run_id} has status {result.status!r}: no features to export")
    if args.out.exists():
        raise UserError(f"'{args.out}' exists; choose another --out (nothing is overwritten)")
    run = result.config
    # the data exactly as the run saw it: its train/eval subsets come from its stored config
    suite = suite_of(run)
    dataset = args.dataset or suite.dataset
    device = pick_device(args.device)
    data = SuiteData(suite, args.data_dir, True, device)
    if dataset == suite.dataset:
        es = data.main
    elif isinstance(data.transfer.get(dataset), str):
        raise UserError(f"transfer target {dataset!r} is not available: {data.transfer[dataset]}")
    elif dataset in data.transfer:
        es = data.transfer[dataset]
    else:
        known = ", ".join([suite.dataset, *data.transfer])
        raise UserError(f"--dataset {dataset!r} is not evaluated in suite {suite.name}; choose one of: {known}")
    method = build_method(run, data.info, device)
    if not (args.run_dir / CHECKPOINT).is_file():
        raise UserError(f"no {CHECKPOINT} in '{args.run_dir}': the features are re-derived from the final checkpoint")
    state = load_checkpoint(args.run_dir / CHECKPOINT, result.spec_hash)  # corrupt or foreign: exit 2
    method.load_state_dict(state["model"])
    method.eval()
    split = es.train if args.split == "train" else es.test
    threads = args.threads or result.threads
    with cpu_threads(threads if device.type == "cpu" else None):
        feats = extract_features(method.encode, split.images, data.info.mean, data.info.std, device,
                                 suite.eval.feature_batch)
    digest = features_digest(feats)
    key = f"{es.name}/{args.split}"
    stored = result.feature_digests.get(key)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, features=feats.cpu().numpy(), labels=split.labels.numpy(),
             run_id=result.run_id, dataset=es.name, split=args.split, digest=digest)
    head = (f"wrote {args.out}: features {tuple(feats.shape)}, labels {tuple(split.labels.shape)} "
            f"({es.name} {args.split}); ")
    if digest == stored:
        print(head + f"digest {digest} matches the stored digest (bit-identical)")
        return 0
    fingerprint = result.feature_fingerprints.get(key)
    if not fingerprint:
        print(head + f"digest {digest} DIFFERS from the stored digest {stored}, and the result stores no "
                     "fingerprint to compare within a tolerance (made by an older version)")
        return 1
    worst = fingerprint_difference(fingerprint, features_fingerprint(feats))
    if worst <= FINGERPRINT_RTOL:
        print(head + f"digest {digest} differs from the stored {stored} (float summation order: another CPU, "
                     f"thread count or GPU), but the features agree: largest fingerprint difference "
                     f"{worst:.1e} of their scale <= {FINGERPRINT_RTOL:g}")
        return 0
    print(head + f"features DIFFER from the ones the metrics were computed on: largest fingerprint difference "
                 f"{worst:.1e} of their scale > {FINGERPRINT_RTOL:g} (digest {digest}, stored {stored})")
    return 1
