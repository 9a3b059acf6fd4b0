"""Failover drills: faults injected into a local serving stack under open-loop load, and their report.

- `load`: the open-loop load generator and the record of every request.
- `scenarios`: the registry of scenarios by name, each a schedule of fault actions.
- `report`: the figures of one scenario from its records and the router's status samples.
- `timeline`: the PNG timeline of a drill.
- `runner`: brings the stack up, runs the scenarios, tears everything down.
"""
