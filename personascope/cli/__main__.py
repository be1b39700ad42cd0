"""``python -m personascope.cli``: the ``personascope`` command."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
