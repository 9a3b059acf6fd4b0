"""Serving: a model server per cloud (`serving.server`, `mct serve`) and a router that fails over between them
(`serving.router`, `mct route`)."""
