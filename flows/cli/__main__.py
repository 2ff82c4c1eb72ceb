"""``python -m flows.cli``: the same as the ``driftloop`` console script."""

from flows.cli import main

main()
