"""`python -m train.compare`: see train/compare/run.py."""

from train.compare.run import main

raise SystemExit(main())
