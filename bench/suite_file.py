"""Suites from TOML files: `bench run --suite-file my_suite.toml`, and `bench list suites --show
NAME` to print a built-in suite as a file to copy and edit.

A suite file has every field a built-in Suite has (bench/config.py), checked against the same
typed dataclasses: an unknown key or a value of the wrong type is a UserError (exit 2) naming the
key and the file. Its dataset is a registered name (`dataset = "fashion-mnist"`, or one a plugin
registers) or a `[dataset]` table that declares the user's own data:

    [dataset]
    name = "flowers"             # how results and the leaderboard name it
    format = "image-folder"      # image-folder (train/ + test/, or one folder split here) | npz
    path = "data/flowers"        # relative to the suite file
    test_fraction = 0.2          # one folder or one .npz: the seeded stratified test share
    split_seed = 0
    on_bad_file = "error"        # error | skip (an unreadable image: stop, or skip it with a count)
    pretrain = "data/unlabeled"  # optional: a folder of unlabeled images to pretrain on

Paths are stored absolute in the run config (`data_source`), so `features` and `export` can
re-register the dataset from a stored run.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any

from bench.config import AugConfig, EvalConfig, Suite, TrainConfig, field_types
from bench.errors import UserError

SECTIONS = {"train": TrainConfig, "aug": AugConfig, "eval": EvalConfig}
# published numbers annotate a built-in suite (bench/suites.py); an edited copy is another setting
TOP_LEVEL = {f.name for f in dataclasses.fields(Suite)} - set(SECTIONS) - {"pretrain_dataset", "data_source",
                                                                      "published"}
REQUIRED = ("dataset", "backbone", "image_size")
SOURCE_FORMATS = ("image-folder", "npz")
SOURCE_KEYS = {"name": str, "format": str, "path": str, "test_fraction": float, "split_seed": int,
               "on_bad_file": str, "pretrain": str}
SOURCE_DEFAULTS = {"test_fraction": 0.2, "split_seed": 0, "on_bad_file": "error", "pretrain": ""}

_registered: dict[str, str] = {}  # dataset name -> canonical source JSON, registered by this module
_owned: set[str] = set()          # every dataset name this module registered (incl. pretraining folders)


def load(path: str | Path) -> Suite:
    """The Suite a TOML file defines (its datasets registered); UserError on any mistake."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"suite file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read suite file {path} ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({' '.join(str(e).split())})") from None
    unknown = sorted(set(doc) - TOP_LEVEL - set(SECTIONS))
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; a suite has: {', '.join(sorted(TOP_LEVEL | set(SECTIONS)))}")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise UserError(f"{path}: missing key {missing[0]!r} (a suite needs {', '.join(REQUIRED)})")
    top_types = field_types(Suite)
    fields: dict[str, Any] = {"name": path.stem, "description": f"suite file {path.name}"}
    source: dict[str, Any] | None = None
    for key, value in doc.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise UserError(f"{path}: {key} must be a table ([{key}]), got {type(value).__name__}")
            fields[key] = _section(SECTIONS[key], value, key, path)
        elif key == "dataset" and isinstance(value, dict):
            source = _source(value, path)
            fields.update(dataset=source["name"], pretrain_dataset=_pretrain_name(source) if source["pretrain"] else "")
        else:
            fields[key] = _typed(value, top_types[key], key, path)
    for key, cls in SECTIONS.items():
        fields.setdefault(key, cls())
    suite = Suite(**fields)
    _check_values(suite, path)
    if source is not None:  # the folder is read at the suite's size, so the size is part of it
        source["image_size"] = suite.image_size
        suite = dataclasses.replace(suite, data_source=json.dumps(source, sort_keys=True))
        register_source(source)
    return suite


def _section(cls: type, table: dict[str, Any], scope: str, path: Path) -> Any:
    types = field_types(cls)
    for key in table:
        if key not in types:
            raise UserError(f"{path}: unknown key '{scope}.{key}'; {scope} has: {', '.join(types)}")
    return cls(**{k: _typed(v, types[k], f"{scope}.{k}", path) for k, v in table.items()})


def _typed(value: Any, typ: Any, key: str, path: Path) -> Any:
    """`value` as the declared type, or a UserError naming the key and the file."""
    if typing.get_origin(typ) is tuple:
        inner = (typing.get_args(typ) or (str,))[0]
        if not isinstance(value, list):
            raise UserError(f"{path}: {key} must be a list of {_name(inner)}, got {value!r}")
        return tuple(_typed(v, inner, key, path) for v in value)
    ok = (isinstance(value, bool) if typ is bool else
          isinstance(value, int) and not isinstance(value, bool) if typ is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if typ is float else
          isinstance(value, str) if typ is str else False)
    if not ok:
        raise UserError(f"{path}: {key} must be {_name(typ)}, got {value!r} ({type(value).__name__})")
    return float(value) if typ is float else value


def _name(typ: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(typ, str(typ))


def _source(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """A `[dataset]` table, checked, with defaults filled in and paths made absolute."""
    for key in table:
        if key not in SOURCE_KEYS:
            raise UserError(f"{path}: unknown key 'dataset.{key}'; dataset has: {', '.join(SOURCE_KEYS)}")
    for key in ("name", "format", "path"):
        if key not in table:
            raise UserError(f"{path}: [dataset] needs {key!r} (name, format and path)")
    source = {**SOURCE_DEFAULTS, **{k: _typed(v, SOURCE_KEYS[k], f"dataset.{k}", path) for k, v in table.items()}}
    if source["format"] not in SOURCE_FORMATS:
        raise UserError(f"{path}: dataset.format {source['format']!r}: choose one of {', '.join(SOURCE_FORMATS)}")
    import datasets
    if source["name"] in datasets.DATASETS and source["name"] not in _owned:
        raise UserError(f"{path}: dataset.name {source['name']!r} is already a dataset (built in or from a "
                        "plugin); give yours another name")
    base = path.resolve().parent
    source["path"] = str((base / source["path"]).resolve())
    if source["pretrain"]:
        source["pretrain"] = str((base / source["pretrain"]).resolve())
    return source


def _check_values(suite: Suite, path: Path) -> None:
    if suite.image_size < 1:
        raise UserError(f"{path}: image_size must be >= 1, got {suite.image_size}")
    if suite.target not in ("cpu", "gpu"):
        raise UserError(f"{path}: target must be 'cpu' or 'gpu', got {suite.target!r}")
    if not suite.methods:
        raise UserError(f"{path}: methods is empty; name at least one method")
    import methods
    for name in suite.methods + suite.baselines:
        if name not in methods.METHODS and name not in methods.BASELINES:
            known = ", ".join(methods.METHODS.names() + methods.BASELINES.names())
            raise UserError(f"{path}: unknown method {name!r}; choose from {known} (or load yours with --plugin FILE.py)")
    from bench.suites import SUITES
    if suite.name in SUITES and SUITES.get(suite.name) != suite:
        raise UserError(f"{path}: name {suite.name!r} is a built-in suite and this file changes it; give it "
                        "another name (its results go to results/<name>)")


def _pretrain_name(source: dict[str, Any]) -> str:
    return f"{source['name']}-unlabeled"


def register_source(source: dict[str, Any]) -> None:
    """Register the dataset (and its unlabeled pretraining folder) a `[dataset]` table declares,
    resized to its suite's `image_size`. The same definition again is a no-op; another one under
    a name this module registered replaces it (one process may load several suite files)."""
    import datasets
    canonical = json.dumps(source, sort_keys=True)
    name, size = source["name"], int(source["image_size"])
    if _registered.get(name) == canonical:
        return
    for n in (name, _pretrain_name(source)):
        if n in _owned:
            datasets.unregister(n)
            _owned.discard(n)
    _registered.pop(name, None)
    if source["format"] == "image-folder":
        fmt = datasets.image_folder(name, source["path"], size, test_fraction=source["test_fraction"],
                                    split_seed=source["split_seed"], on_bad_file=source["on_bad_file"],
                                    description=f"image folder {source['path']}")
    else:
        fmt = datasets.npz_arrays(name, source["path"], size, test_fraction=source["test_fraction"],
                                  split_seed=source["split_seed"])
    formats = [fmt]
    if source["pretrain"]:
        formats.append(datasets.unlabeled_folder(_pretrain_name(source), source["pretrain"], size,
                                                 on_bad_file=source["on_bad_file"]))
    for f in formats:  # every check has passed: register both or neither
        if f.info.name in datasets.DATASETS:
            raise UserError(f"dataset {f.info.name!r} is already registered (built in or by a plugin); "
                            "give yours another dataset.name")
    for f in formats:
        datasets.register(f)
        _owned.add(f.info.name)
    _registered[name] = canonical


def to_toml(suite: Suite) -> str:
    """A suite as a suite file (every field, defaults included) to copy and edit."""
    import tomli_w
    doc: dict[str, Any] = {}
    for f in dataclasses.fields(Suite):
        value = getattr(suite, f.name)
        if f.name in ("pretrain_dataset", "data_source", "published"):
            continue
        if f.name == "dataset" and suite.data_source:
            source = {k: v for k, v in json.loads(suite.data_source).items() if k != "image_size"}
            doc[f.name] = source
            continue
        doc[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    doc = json.loads(json.dumps(doc))  # tuples -> lists
    # TOML puts plain keys before tables: move the dataset table behind the top-level keys
    tables = {k: doc.pop(k) for k in list(doc) if isinstance(doc[k], dict)}
    head = (f"# suite {suite.name}: {suite.description}\n"
            f"# run it with: python -m bench run --suite-file {suite.name}.toml\n")
    return head + tomli_w.dumps({**doc, **tables})
