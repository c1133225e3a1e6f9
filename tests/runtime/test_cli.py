"""runtime.cli: the one parser of sizes and shapes every command uses."""

from __future__ import annotations

import argparse

import pytest

from runtime.cli import float_at_least, int_at_least, parse_shape, parse_size
from runtime.errors import UserError


def test_parse_shape():
    assert parse_shape("1x3x256x512") == (1, 3, 256, 512)
    assert parse_shape("2,3,64,128") == (2, 3, 64, 128)
    for bad in ("", "1x3xAx4", "0x3x4x4", "-1x3"):
        with pytest.raises(UserError, match="not a shape"):
            parse_shape(bad)


def test_parse_size():
    assert parse_size("512x1024") == (512, 1024)
    assert parse_size(" 64 , 128 ") == (64, 128)
    assert parse_size("32X48") == (32, 48)
    assert parse_size(None) is None
    for bad in ("", "512", "0x10", "1x2x3", "ax4", "-4x4"):
        with pytest.raises(UserError, match="--size '.*' is not HxW"):
            parse_size(bad)


def test_range_types_name_the_option_and_the_value(capsys):
    p = argparse.ArgumentParser(prog="cmd")
    p.add_argument("--iters", type=int_at_least(1))
    p.add_argument("--warmup", type=int_at_least(0))
    p.add_argument("--tie", type=float_at_least(0))
    args = p.parse_args(["--iters", "1", "--warmup", "0", "--tie", "0.05"])
    assert (args.iters, args.warmup, args.tie) == (1, 0, 0.05)
    assert type(args.iters) is int and type(args.tie) is float
    for argv, message in ((["--iters", "0"], "argument --iters: '0' is not an integer >= 1"),
                          (["--iters", "2.5"], "argument --iters: '2.5' is not an integer >= 1"),
                          (["--warmup", "-1"], "argument --warmup: '-1' is not an integer >= 0"),
                          (["--tie", "-0.1"], "argument --tie: '-0.1' is not a number >= 0"),
                          (["--tie", "nan"], "argument --tie: 'nan' is not a number >= 0"),
                          (["--tie", "abc"], "argument --tie: 'abc' is not a number >= 0")):
        with pytest.raises(SystemExit) as e:
            p.parse_args(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"cmd: error: {message}"
