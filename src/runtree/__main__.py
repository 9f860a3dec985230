"""``python -m runtree``: the command line."""

from runtree.cli import main

if __name__ == "__main__":
    main()
