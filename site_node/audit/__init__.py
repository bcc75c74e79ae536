"""Memorisation audits at the site: SSIM and feature-space nearest neighbours, holdout test.

Use :func:`site_node.audit.memorisation.run_memorisation_audit`; its summary holds
numbers only and may leave the site, its image panel never does.
"""

__all__ = ["memorisation", "panel"]
