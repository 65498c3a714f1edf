"""TensorBoard event files of a run (`bench run --tensorboard`): every logged training term
(losses, the learning rate, views/s) per step from the run's train_log.csv, and the learning
curve's kNN top-1 per epoch, under `<out>/tensorboard/<run_id>/`.

Written from the stored log after each run rather than from inside the training loop, so the
hot path never waits on event-file I/O and a resumed run's events are complete (its log
replays from the checkpoint). An existing event directory of a run is replaced, because it
is derived entirely from the stored log and result: nothing in it is lost.
"""
from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

from bench.results.store import RunRecord

NOT_SCALARS = {"step", "epoch"}


def write_run(record: RunRecord, run_dir: Path, out_dir: Path) -> Path:
    """Write the events of one run; returns its event directory."""
    from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package
    target = out_dir / record.run_id
    if target.exists():
        shutil.rmtree(target)
    writer = SummaryWriter(log_dir=str(target))
    try:
        log = run_dir / "train_log.csv"
        if log.is_file():
            with log.open(newline="") as f:
                for row in csv.DictReader(f):
                    step = int(row["step"])
                    for key, text in row.items():
                        if key in NOT_SCALARS or not text:
                            continue
                        value = float(text)
                        if math.isfinite(value):
                            writer.add_scalar(f"train/{key}", value, step)
        for point in record.curve or []:
            writer.add_scalar("curve/knn_top1", float(point["knn_top1"]), int(point["epoch"]))
        for name, value in (record.metrics or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                writer.add_scalar(f"final/{name}", float(value), 0)
    finally:
        writer.close()
    return target
