"""User plug-ins: Python files that register methods, backbones or datasets through the same
registries the built-in ones use (`methods.register`, `bench.backbones.BACKBONES.register`,
`datasets.register`). Loaded from `--plugin FILE.py` (any command) and from `$BENCH_PLUGINS`
(paths separated by `os.pathsep`), before the command runs; docs/plugins.md has an example.

A plugin that raises on import, or registers a name that exists, is a UserError (exit 2) naming
the file; whatever it registered before failing is removed again, so nothing half-loaded stays.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.errors import UserError

ENV = "BENCH_PLUGINS"
_loaded: dict[Path, str] = {}  # resolved path -> module name (a file is imported once per process)


def paths_from_env() -> list[str]:
    return [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]


def load(paths: list[str]) -> list[str]:
    """Import every plugin file (each once per process); returns their module names."""
    names = []
    for text in paths:
        path = Path(text).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise UserError(f"plugin {path} {what}; pass a Python file (--plugin FILE.py or ${ENV})")
        if path.suffix != ".py":
            raise UserError(f"plugin {path} is not a .py file")
        key = path.resolve()
        if key not in _loaded:
            _loaded[key] = _import(path, key)
        names.append(_loaded[key])
    return names


def _import(path: Path, key: Path) -> str:
    name = f"bench_plugin_{path.stem}_{hashlib.sha1(str(key).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, key)
    if spec is None or spec.loader is None:
        raise UserError(f"plugin {path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the user's folder
    try:
        with _all_or_nothing(path):
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
    finally:
        sys.dont_write_bytecode = no_bytecode
    return name


@contextmanager
def _all_or_nothing(path: Path) -> Iterator[None]:
    """Undo a failed plugin's registrations and report its error in one line."""
    import datasets
    import methods
    from bench.backbones import BACKBONES
    registries = [methods.METHODS, methods.BASELINES, BACKBONES]
    before = [r.snapshot() for r in registries]
    datasets_before = set(datasets.DATASETS)
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        for registry, snapshot in zip(registries, before):
            registry.restore(snapshot)
        for name in set(datasets.DATASETS) - datasets_before:
            datasets.unregister(name)
        text = " ".join(str(e).split())
        if isinstance(e, (ValueError, UserError)) and "registered twice" in text:
            raise UserError(f"plugin {path}: {text}; rename yours (names must be unique)") from None
        where = _plugin_line(e, path)
        raise UserError(f"plugin {path} failed to import{where}: {type(e).__name__}: {text}") from None


def _plugin_line(e: BaseException, path: Path) -> str:
    """' (line N)' of the deepest traceback frame inside the plugin file, if any."""
    tb, line = e.__traceback__, None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""
