"""The hub's side of memorisation audits: stored per-site reports and their readable rendering."""

__all__ = ["report"]
