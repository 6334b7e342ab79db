"""REST admin API and Prometheus metrics (aiohttp): see ``signaling.admin.app``."""

from signaling.admin.app import AdminServer, build_app

__all__ = ["AdminServer", "build_app"]
