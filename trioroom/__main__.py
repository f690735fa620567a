"""``python -m trioroom``: the same as the ``trioroom`` command."""

from .cli import main

if __name__ == "__main__":
    main()
