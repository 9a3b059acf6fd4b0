"""Entry point of the `mct-serving` Pulumi project for the Pulumi CLI (`pulumi up` in this directory)."""

from infra.program import serving_program

serving_program()
