"""The `mct` command line: one module per command group, composed in `app`."""
