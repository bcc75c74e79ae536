"""The hub's CLI commands, one module per verb; ``hub.cli`` registers them."""

__all__: list[str] = []
