"""`python -m toolkit` runs the `mct` command line."""

from toolkit.cli.app import main

main()
