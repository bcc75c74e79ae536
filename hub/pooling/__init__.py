"""Pooling at the hub: label harmonisation across sites, pooled archives, pooled classifiers.

Modules: ``archive`` (read one NIH-layout archive), ``pool`` (union label space,
per-site masks, counts, selection: all / match-prevalence / balance / enrich),
``writer`` (write a pooled archive with checksums into the store, ``hub.archives``),
``dataset`` / ``module`` / ``train`` (a classifier trained on archives only, masked
weighted BCE, Lightning), ``audit`` (the audit policy for every archive's
generator). The manifests and the classifier bundle are artifact kinds:
``shared.artifacts.archive`` and ``shared.artifacts.classifier``.
"""

__all__ = ["archive", "audit", "dataset", "module", "pool", "train", "writer"]
