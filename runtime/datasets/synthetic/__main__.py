"""`python -m runtime.datasets.synthetic`: write synthetic scenes as a folder dataset or a video."""

from runtime.datasets.synthetic.dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
