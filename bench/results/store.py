"""Result store: `<out>/runs/<run_id>/result.json`, one typed RunRecord per run, written
atomically (tmp file + rename) and read back only through this module.

The run id is a readable prefix plus the hash of the run's ResolvedRun, so re-running a suite
skips what is complete and resumes what is not, and a changed config never reuses an old
result. A per-run lock file keeps two processes from training the same run.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from bench.config import SCHEMA_VERSION, ResolvedRun
from bench.errors import UserError
from bench.suites import method_config_class
from bench.threads import threads_of

RESULT = "result.json"
STATUSES = ("ok", "failed", "diverged")


@dataclass
class RunRecord:
    """What result.json holds for one run. `status` ok: trained and evaluated (metrics, protocols,
    diagnostics, feature digests, timings, learning curve); diverged: training hit a non-finite
    loss; failed: training or evaluation raised (`reason`, `traceback`). Every field is present
    in every record, so readers need no defaults of their own."""
    run_id: str
    spec_hash: str
    spec: dict[str, Any]               # the RunSpec: suite, method, seed, aug_mode
    config: ResolvedRun
    status: str                        # ok | failed | diverged
    reason: str | None = None
    variant: str = ""                  # what exactly ran, e.g. "mae (masked-input reconstruction, CNN)"
    train: dict[str, Any] = field(default_factory=dict)          # the TrainOutcome
    augmentation: str = ""
    metrics: dict[str, float] = field(default_factory=dict)      # top-1 % per metric
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)  # how each metric was made
    # 95% bootstrap interval of each metric over the test images (bench/eval/intervals.py);
    # empty in results made before issue #17
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)
    predictions: str | None = None     # file in the run directory with per-test-image correctness (None: not stored)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    transfer_skipped: dict[str, str] = field(default_factory=dict)
    feature_digests: dict[str, str] = field(default_factory=dict)
    feature_fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)    # learning curve: {"epoch", "knn_top1"} points
    curve_protocol: str | None = None  # how the curve points were measured (None: no curve, e.g. baselines)
    traceback: str | None = None
    python: str | None = None
    packages: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None      # where it was read from (not stored)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def threads(self) -> int | None:
        """CPU thread count the run was made with (None on a GPU)."""
        return threads_of(self.timings.get("device"))

    def to_json(self) -> dict[str, Any]:
        d = {"schema_version": SCHEMA_VERSION}
        for f in fields(self):
            if f.name == "directory":
                continue
            v = getattr(self, f.name)
            d[f.name] = v.to_json() if isinstance(v, ResolvedRun) else v
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "result") -> "RunRecord":
        """A record from result.json's dict; UserError naming `where` when it is not one."""
        if not isinstance(data, dict):
            raise UserError(f"{where}: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise UserError(f"{where} has schema_version {version!r}, this ssl-bench writes {SCHEMA_VERSION}; "
                            "use a new --out directory or the ssl-bench version that wrote it")
        missing = [k for k in ("run_id", "spec_hash", "spec", "config", "status") if data.get(k) is None]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}; move it aside to re-run that run")
        if data["status"] not in STATUSES:
            raise UserError(f"{where}: status {data['status']!r} is not one of {', '.join(STATUSES)}")
        names = {f.name for f in fields(cls)} - {"directory"}
        kept = {k: v for k, v in data.items() if k in names}
        try:
            config = data["config"]
            kept["config"] = ResolvedRun.from_json(config, method_config_class(config["method"], config["method_config"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: its config cannot be read ({type(e).__name__}: {e}); move it aside to re-run "
                            "that run") from None
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        # a stored null where a mapping belongs (e.g. a failed run's metrics) reads as empty
        return cls(**{k: (_empty(k) if v is None and k not in _NULLABLE else v) for k, v in kept.items()})


_NULLABLE = {"reason", "traceback", "python", "git_commit", "curve_protocol", "predictions"}


def _empty(name: str) -> Any:
    f = next(f for f in fields(RunRecord) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def write_result(run_dir: Path, record: RunRecord) -> None:
    write_json(run_dir / RESULT, record.to_json())


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def keep_aside(path: Path) -> Path:
    """Rename a failed attempt's record `<stem>.json` to the first free `<stem>.attempt<N>.json`
    beside it, so that a re-run never overwrites it; returns the new path."""
    n = 1
    while (aside := path.with_name(f"{path.stem}.attempt{n}{path.suffix}")).exists():
        n += 1
    path.rename(aside)
    return aside


def read_result(run_dir: Path) -> RunRecord | None:
    """The record in `run_dir`, None if there is none; UserError if it is unreadable."""
    path = run_dir / RESULT
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}); move it aside to re-run that run") from None
    record = RunRecord.from_json(data, str(path))
    record.directory = run_dir
    return record


def load_results(out: Path) -> list[RunRecord]:
    """Every result.json below `out` (also below shard directories), sorted by run id."""
    if not out.exists():
        raise UserError(f"results directory '{out}' does not exist")
    results = [r for p in sorted(out.glob("**/runs/*/" + RESULT)) if (r := read_result(p.parent)) is not None]
    if not results:
        raise UserError(f"no runs in '{out}' (looked for {out}/runs/*/{RESULT}); run `python -m bench run` first")
    return results


def ensure_writable(out: Path) -> None:
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory '{out}' is not writable ({e.strerror}); choose another with --out") from None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Exclusive per-run lock (flock, released by the kernel if the process dies).

    Yields False when another process holds it: the caller skips that run.
    """
    import fcntl
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def environment() -> dict[str, Any]:
    """Package versions, git commit and machine, stored with every result."""
    versions = {}
    for pkg in ("torch", "torchvision", "timm", "lightly", "kornia", "scikit-learn", "numpy", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "git_commit": git_commit(),
        "machine": {"host": socket.gethostname(), "platform": platform.platform(),
                    "processor": platform.machine(), "cpu_count": os.cpu_count(), "cpu_model": _cpu_model()},
    }


def _cpu_model() -> str | None:
    """The CPU's model name: another model means other BLAS kernels, so other float rounding."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]  # the repository: bench/results/store.py
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
