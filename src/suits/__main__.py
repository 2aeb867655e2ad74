"""The ``suits`` program (console script and ``python -m suits``): tunes its own process
(:func:`suits.tuning.tune_process`) before torch loads, then runs :func:`suits.cli.main`.
``suits.cli.main`` itself is a library function and leaves the calling process alone."""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from suits.tuning import tune_process

    tune_process()
    from suits.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
