"""The seed project's launch command, kept as a thin alias: `python run_app.py [ARGS]` is
`fedrec up [ARGS]` (see `fedrec up --help`)."""

import sys

from fedrec_app.cli import main

if __name__ == "__main__":
    sys.exit(main(["up", *sys.argv[1:]]))
