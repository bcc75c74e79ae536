"""The hub's side of memorisation audits: stored per-site reports and their readable rendering.

``report`` (per-site reports, report.md), ``gate`` (where synthesize and pool ask the
audit policy: the hub over gRPC, or the registry under the hub's root).
"""

__all__ = ["gate", "report"]
