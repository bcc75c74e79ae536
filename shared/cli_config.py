"""One config file per role feeds the defaults of every CLI verb (click's ``default_map``).

``radshare-site --config /etc/radshare/site.yaml VERB ...`` and
``radshare-hub --config /etc/radshare/hub.yaml VERB ...`` (or the environment variables
``RADSHARE_SITE_CONFIG`` / ``RADSHARE_HUB_CONFIG``) read the role's YAML once; each verb
then takes its defaults from it: an option named ``tls_dir`` defaults to the file's TLS
folder in every verb that has one, including verbs added later. Flags on the command line
always win. The role's loader (``site_node.config`` / ``hub.config``) says which option
names it fills.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from shared.cli_ranges import iter_commands

__all__ = ["default_map_for"]


def default_map_for(
    root: click.Command,
    by_option: Mapping[str, Any],
    by_verb: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """click ``default_map`` for ``root``'s verbs.

    ``by_option``: option name → default, for every verb that has such an option.
    ``by_verb``: ``"verb"`` (or ``"group verb"``) → {option name → default}, which wins.
    Values that are None are left out (the verb's own default stays).
    """
    default_map: dict[str, Any] = {}
    for path, command in iter_commands(root):
        names = {p.name for p in command.params}
        values = {k: v for k, v in by_option.items() if k in names}
        values.update((by_verb or {}).get(" ".join(path), {}))
        values = {k: str(v) if hasattr(v, "__fspath__") else v for k, v in values.items()}
        values = {k: v for k, v in values.items() if v is not None and k in names}
        if not values:
            continue
        node = default_map
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = values
    return default_map
