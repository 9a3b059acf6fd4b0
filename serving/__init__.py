"""Serving (coming next): a FastAPI model server per cloud and a router that fails over between them."""
