"""`bench run --shard I/N`: N disjoint slices that together are the suite (job arrays)."""
from __future__ import annotations

import pytest

from bench.cli import main
from bench.engine.distributed import parse_shard, shard
from bench.errors import UserError
from bench.suites import SUITES, expand


@pytest.mark.parametrize("suite", ["quick", "cifar10-all"])
@pytest.mark.parametrize("seeds", [1, 3])
def test_shards_are_disjoint_and_cover_the_suite(suite, seeds):
    specs = expand(SUITES.get(suite), None, seeds)
    assert len(specs) == len(set(specs))  # RunSpecs are hashable and distinct
    for n in (1, 2, 3, 4, 7, len(specs), len(specs) + 5):
        slices = [shard(specs, i, n) for i in range(n)]
        flat = [s for sl in slices for s in sl]
        assert sorted(flat, key=specs.index) == specs            # together: the whole suite
        assert len(flat) == len(set(flat)) == len(specs)          # disjoint
        assert max(map(len, slices)) - min(map(len, slices)) <= 1  # balanced
        for i, sl in enumerate(slices):                           # stable: the same call, the same slice
            assert sl == shard(expand(SUITES.get(suite), None, seeds), i, n)


def test_expand_order_is_stable():
    a = expand(SUITES.get("quick"), None, 2)
    b = expand(SUITES.get("quick"), None, 2)
    assert a == b and [s.method for s in a[:2]] == [a[0].method] * 2  # method-major, then seed


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("3/4", (3, 4)), (" 2/10 ", (2, 10))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "-1/4", "1/0", "1", "a/b", "1/2/3", "", "1/-2"])
def test_bad_shard_spec(text):
    with pytest.raises(UserError, match="expected I/N with 0 <= I < N"):
        parse_shard(text)


@pytest.mark.parametrize("text", ["2/2", "x"])
def test_bad_shard_on_the_command_line(capsys, tmp_path, text):
    assert main(["run", "--suite", "quick", "--shard", text, "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --shard") and "0 <= I < N" in lines[0]
    assert not (tmp_path / "out").exists()


def test_shard_selects_its_slice_on_the_command_line(capsys, tmp_path):
    # the slice is computed before any data is read: a missing data dir then stops the run
    argv = ["run", "--suite", "cifar10-all", "--seeds", "2", "--data-dir", str(tmp_path / "none"),
            "--out", str(tmp_path / "o")]
    total = len(expand(SUITES.get("cifar10-all"), None, 2))
    assert main([*argv, "--shard", "1/3"]) == 2
    err = capsys.readouterr().err
    assert f"shard 1/3: {len(range(1, total, 3))} of the suite's {total} runs" in err


def test_empty_shard_does_nothing(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(["run", "--suite", "quick", "--methods", "simclr", "--shard", "1/2", "--out", str(out)]) == 0
    assert "shard 1/2: 0 of the suite's 1 runs" in capsys.readouterr().err
    assert not out.exists()
