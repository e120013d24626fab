"""``python -m mnist_lit``: the same as ``python -m mnist_lit.cli``."""

from mnist_lit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
