"""`python -m train.evaluate --checkpoint S.pt [runtime.eval's options]`: an alias of
`python -m runtime.eval --model S.pt`, kept for the scripts that use it.

runtime.eval runs a .pt checkpoint through the PyTorch backend (train/torch_backend.py), so a checkpoint
is scored by the same pre-processing, upsampling, arg-max and ConfusionMatrix as its ONNX and TensorRT
exports, on the dataset it was trained on unless `--data` names another; its report adds the
checkpoint's method and iterations. Options are runtime.eval's (`python -m runtime.eval --help`), with
`--checkpoint` for `--model`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """runtime.eval's main with `--checkpoint X` (or `--checkpoint=X`) given as `--model X`."""
    from runtime.eval import main as eval_main

    args = list(sys.argv[1:] if argv is None else argv)
    args = ["--model" if a == "--checkpoint" else "--model=" + a.split("=", 1)[1] if a.startswith("--checkpoint=")
            else a for a in args]
    return int(eval_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
