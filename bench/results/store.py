"""Result store: `<out>/runs/<run_id>/result.json`, written atomically (tmp file + rename).

The run id is a readable prefix plus a hash of the resolved spec and config, so re-running a
suite skips what is complete and resumes what is not, and a changed config never reuses an
old result. A per-run lock file keeps two processes from training the same run.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from bench.errors import UserError

from bench.config import SCHEMA_VERSION  # noqa: F401  (written into every result.json)

RESULT = "result.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULT
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}); move it aside to re-run that run") from None
    check_schema(data, path)
    return data


def check_schema(data: dict[str, Any], path: Path) -> None:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{path} has schema_version {version!r}, this ssl-bench writes {SCHEMA_VERSION}; "
                        "use a new --out directory or the ssl-bench version that wrote it")


def load_results(out: Path) -> list[dict[str, Any]]:
    """Every result.json below `out` (also below shard directories), sorted by run id."""
    if not out.exists():
        raise UserError(f"results directory '{out}' does not exist")
    paths = sorted(out.glob("**/runs/*/" + RESULT))
    results = []
    for p in paths:
        r = read_result(p.parent)
        if r is not None:
            r["_dir"] = str(p.parent)
            results.append(r)
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
                    "processor": platform.machine(), "cpu_count": os.cpu_count()},
    }


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
