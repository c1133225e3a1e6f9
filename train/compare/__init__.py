"""`python -m train.compare`: distillation methods side by side at matched compute.

    run.py     the command: every method x seed at one budget (or a sweep of budgets), as child runs
    costs.py   what each method's step costs (interleaved seconds, counted FLOPs) and the counts a budget buys
    report.py  compare.md / compare.json / compare.png
    sweep.py   `--budgets`: mIoU by budget and method, crossings of the baseline, sweep.md / sweep.png
"""

from train.compare.run import main  # the command's entry point: `python -m train.compare` runs it

__all__ = ["main"]
