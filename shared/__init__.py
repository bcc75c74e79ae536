"""Code both the hub and the site node use: label space, networks, formats, metrics, errors.

Imports neither ``hub`` nor ``site_node``, and no Lightning.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
