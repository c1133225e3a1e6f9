"""runtime.cli: the one parser of sizes and shapes every command uses."""

from __future__ import annotations

import pytest

from runtime.cli import parse_shape, parse_size
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
