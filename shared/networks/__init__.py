"""Networks that may leave a hospital: the PGGAN generator (and later the labeller)."""

from shared.networks.generator import Generator, GeneratorConfig

__all__ = ["Generator", "GeneratorConfig"]
