"""The site node's CLI commands, one module per verb; ``site_node.cli`` registers them."""

__all__: list[str] = []
