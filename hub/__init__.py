"""The consortium hub: registry service, class optimisation, archives, pooling, reports.

The hub never sees a real image: it holds generator weights, manifests,
synthetic archives and aggregate numbers sent back by the sites.
"""

__all__: list[str] = []
