"""The hub's archives: pooled archives stored by content id and streamed to operators.

Modules: ``store`` (``ArchiveStore``: archives under ``<root>/archives/<id>/``, and
``archive_stream``, the pure handler of ``PullArchive``). The manifest model is
``shared.artifacts.archive``; the operator's resumable client is
``shared.hub_client.HubClient.pull_archive``.
"""

__all__ = ["store"]
