"""`python -m lmforge <command> ...` is the same as `lmforge <command> ...`."""

from lmforge.cli import main

if __name__ == "__main__":
    main()
