"""Copy tensorrt-stubs into ./stubs (generated, gitignored) so that mypy can check TensorRT code.

tensorrt-stubs (pip install --no-deps tensorrt-stubs) installs `tensorrt/__init__.pyi` and
`tensorrt_bindings/*.pyi` without a py.typed marker, so mypy ignores them where they lie, and
`tensorrt_bindings/tensorrt.pyi` does not parse (10.13.0.35.1: keyword-named parameters, a parameter
without a default after defaulted ones). Copying fixes, generically:
- parameters named with a Python keyword (`in: list[...]`) are renamed `in_`;
- a parameter without a default after defaulted ones gets `= ...`;
- the import of `tensorrt_libs` (a runtime-only package) is dropped.

    python scripts/make_trt_stubs.py [--out stubs]
"""

from __future__ import annotations

import argparse
import ast
import keyword
import re
import sys
import sysconfig
from pathlib import Path

PACKAGES = ("tensorrt", "tensorrt_bindings")
_KEYWORD_PARAM = re.compile(r"(?<=[(,])(\s*)(" + "|".join(keyword.kwlist) + r")(\s*:)")
_PARAM = re.compile(r"^(\s*\*{0,2}[A-Za-z_]\w*\s*:\s*[^=]+?)(\s*=\s*.+)?$")


def find_site_stubs() -> Path:
    """The site-packages folder holding tensorrt/__init__.pyi."""
    for key in ("purelib", "platlib"):
        root = Path(sysconfig.get_paths()[key])
        if (root / "tensorrt" / "__init__.pyi").is_file():
            return root
    raise SystemExit("tensorrt-stubs is not installed in this environment: pip install --no-deps tensorrt-stubs")


def fix_signature(line: str) -> str:
    """Fix one `def` line: keyword-named parameters and non-default-after-default parameters."""
    line = _KEYWORD_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}_{m.group(3)}", line)
    m = re.match(r"^(\s*def \w+\()(.*)(\)\s*(->.*)?:\s*(#.*)?)$", line)
    if not m:
        return line
    params = _split_params(m.group(2))
    seen_default = False
    out = []
    for p in params:
        bare = p.strip()
        if bare.startswith("*") or bare == "/":
            seen_default = False if bare.startswith("*") else seen_default
            out.append(p)
            continue
        if "=" in _strip_brackets(bare):
            seen_default = True
        elif seen_default and ":" in bare:
            p = p.rstrip() + " = ..."
        out.append(p)
    return m.group(1) + ",".join(out) + m.group(3)


def _strip_brackets(text: str) -> str:
    """`text` with everything inside brackets removed (so '=' in defaults is found at depth 0)."""
    depth, keep = 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            keep.append(ch)
    return "".join(keep)


def _split_params(text: str) -> list[str]:
    depth, cur, parts = 0, [], []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if cur or parts:
        parts.append("".join(cur))
    return parts


def fix_stub(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if re.match(r"^\s*import tensorrt_libs\b", line):
            continue
        lines.append(fix_signature(line) if line.lstrip().startswith("def ") else line)
    return "\n".join(lines) + "\n"


def make_stubs(out: Path, site: Path | None = None) -> list[Path]:
    site = site or find_site_stubs()
    written = []
    for pkg in PACKAGES:
        for src in sorted((site / pkg).glob("*.pyi")):
            dst = out / pkg / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            fixed = fix_stub(src.read_text(encoding="utf-8"))
            ast.parse(fixed, filename=str(dst))  # a syntax error left is a bug in the fixes above
            dst.write_text(fixed, encoding="utf-8")
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "stubs")
    args = p.parse_args(argv)
    files = make_stubs(args.out)
    print(f"wrote {len(files)} stub files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
