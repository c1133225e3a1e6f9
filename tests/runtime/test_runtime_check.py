"""runtime.check reports the machine without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_runtime_report_imports_and_runs_with_torch_blocked(tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from runtime.check import main\n"
            f"rc = main(['--json', {str(tmp_path / 'r.json')!r}])\n"
            "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None], 'torch imported'\n"
            "raise SystemExit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    items = {(r["area"], r["item"]) for r in rows}
    assert {("cpu", "cores"), ("onnxruntime", "providers"), ("tensorrt", "version"), ("gpu", "GPU")} <= items \
        or ("gpu", "GPU 0") in items
    assert all(r["status"] in ("ok", "missing", "info") for r in rows)
    assert all(r["note"] for r in rows if r["status"] == "missing")  # every missing part says what to do
    assert "avx2" in proc.stdout or "asimd" in proc.stdout
