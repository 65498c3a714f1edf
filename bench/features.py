"""`python -m bench features RUN_DIR --split train|test [--dataset NAME] --out F.npz`

Re-derives a run's frozen features from its final checkpoint with the very code the
evaluation used (same subsets, same normalization, eval mode) and writes them with their
labels to an .npz. The digest stored in result.json at evaluation time is compared with the
exported array, so the file provably holds the features the stored metrics were computed on.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from bench import store
from bench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory: <out>/runs/<run_id>")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--dataset", help="the suite's dataset (default) or one of its transfer targets")
    p.add_argument("--out", type=Path, required=True, help="the .npz file to write (refuses to overwrite)")
    p.add_argument("--data-dir", help="where datasets are looked for")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def main(args: argparse.Namespace) -> int:
    from bench import runner
    from bench.evaluate import extract_features, features_digest
    from bench.suites import SUITES, EvalConfig, TrainConfig
    from bench.train import CHECKPOINT

    result = store.read_result(args.run_dir)
    if result is None:
        raise UserError(f"no {store.RESULT} in '{args.run_dir}'; pass a directory <out>/runs/<run_id>")
    if result.get("status") != "ok":
        raise UserError(f"run {result.get('run_id')} has status {result.get('status')!r}: no features to export")
    if args.out.exists():
        raise UserError(f"'{args.out}' exists; choose another --out (nothing is overwritten)")
    cfg = result["config"]
    suite = SUITES.get(cfg["suite"])
    suite = dataclasses.replace(suite, train=TrainConfig(**cfg["train"]),
                                eval=EvalConfig(**runner._tuples(cfg["eval"])))
    dataset = args.dataset or suite.dataset
    device = runner.pick_device(args.device)
    data = runner.SuiteData(suite, runner.Options(out=args.run_dir, data_dir=args.data_dir), device)
    if dataset == suite.dataset:
        es = data.main
    elif isinstance(data.transfer.get(dataset), str):
        raise UserError(f"transfer target {dataset!r} is not available: {data.transfer[dataset]}")
    elif dataset in data.transfer:
        es = data.transfer[dataset]
    else:
        known = ", ".join([suite.dataset, *data.transfer])
        raise UserError(f"--dataset {dataset!r} is not evaluated in suite {suite.name}; choose one of: {known}")
    method = runner.build_method(suite, cfg, data.info, device)
    state = torch.load(args.run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    if state.get("spec_hash") != result["spec_hash"]:
        raise UserError(f"checkpoint in '{args.run_dir}' does not belong to this result (spec hash differs)")
    method.load_state_dict(state["model"])
    method.eval()
    split = es.train if args.split == "train" else es.test
    feats = extract_features(method.encode, split.images, data.info.mean, data.info.std, device,
                             suite.eval.feature_batch)
    digest = features_digest(feats)
    stored = result.get("feature_digests", {}).get(f"{es.name}/{args.split}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, features=feats.cpu().numpy(), labels=split.labels.numpy(),
             run_id=result["run_id"], dataset=es.name, split=args.split, digest=digest)
    same = "matches the stored digest" if digest == stored else f"DIFFERS from the stored digest {stored}"
    if digest != stored and device.type == "cuda":
        same += " (CUDA kernels are not bit-exact; on CPU the digests match)"
    print(f"wrote {args.out}: features {tuple(feats.shape)}, labels {tuple(split.labels.shape)} "
          f"({es.name} {args.split}); digest {digest} {same}")
    return 0 if digest == stored or device.type == "cuda" else 1
