"""Site data: readers for NIH/CheXpert/plain layouts, the preprocessing cache, splits."""

__all__: list[str] = []
