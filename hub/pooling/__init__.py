"""Pooling at the hub: label harmonisation across sites, pooled archives, pooled classifiers.

Modules: ``archive`` (read one NIH-layout archive), ``pool`` (union label space,
per-site masks, counts, selection: all / match-prevalence / balance / enrich),
``writer`` (write a pooled archive with checksums), ``store`` (archives by content id,
the ``PullArchive`` stream), ``pull`` (the operator's resumable client),
``dataset`` / ``module`` / ``train`` (a classifier trained on archives only, masked
weighted BCE, Lightning) and ``bundle`` (the signed classifier bundle).
"""

__all__ = ["archive", "bundle", "dataset", "module", "pool", "pull", "store", "train", "writer"]
