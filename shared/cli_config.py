"""One config file per role feeds the defaults of every CLI verb (click's ``default_map``).

``radshare-site --config /etc/radshare/site.yaml VERB ...`` and
``radshare-hub --config /etc/radshare/hub.yaml VERB ...`` (or the environment variables
``RADSHARE_SITE_CONFIG`` / ``RADSHARE_HUB_CONFIG``) read the role's YAML once; each verb
then takes its defaults from it: an option named ``tls_dir`` defaults to the file's TLS
folder in every verb that has one, including verbs added later. Flags on the command line
always win. The role's loader (``site_node.config`` / ``hub.config``) says which option
names it fills. Both CLIs build their ``--config`` root callback with
:func:`root_options_callback` and their ``config`` verb with :func:`config_check_verb`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import typer
from pydantic import BaseModel

from shared.cli_ranges import iter_commands

__all__ = ["OptionDefaults", "config_check_verb", "default_map_for", "root_options_callback"]

OptionDefaults = tuple[Mapping[str, Any], Mapping[str, Mapping[str, Any]]]
"""(option name → default for every verb, verb → {option → default}), as default_map_for takes."""


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


def root_options_callback(
    doc: str,
    env: str,
    config_help: str,
    load: Callable[[Path], tuple[BaseModel, OptionDefaults]],
) -> Callable[..., None]:
    """The root callback of a role's CLI: ``--config FILE`` (or ``$env``) feeds every verb.

    ``doc``: the CLI's one-line help; ``config_help``: the help of ``--config`` (an example
    path and ``$env``). ``load(path)`` reads and validates the file and returns (config,
    option defaults); it runs only when a file is given, so the role's loader is imported
    only then. Stores ``{"config_path", "config"}`` in ``ctx.obj`` (what
    ``config_check_verb`` reads) and sets ``ctx.default_map``.
    """

    def root_options(
        ctx: typer.Context,
        config: Path | None = typer.Option(None, "--config", envvar=env, help=config_help),
    ) -> None:
        if config is None:
            return
        cfg, (by_option, by_verb) = load(config)
        ctx.obj = {"config_path": config, "config": cfg}
        ctx.default_map = default_map_for(ctx.command, by_option, by_verb)

    root_options.__doc__ = doc
    return root_options


def config_check_verb(cli: str, env: str, example: str) -> Callable[[typer.Context], None]:
    """The ``config`` verb of ``cli`` (``radshare-hub``/``radshare-site``): check the file.

    ``env``: the environment variable that names the file; ``example``: its usual path.
    The root callback stores ``{"config_path", "config"}`` in ``ctx.obj``.
    """

    def config_check(ctx: typer.Context) -> None:
        from shared.errors import ConfigError

        state = (ctx.parent.obj if ctx.parent is not None else None) or {}
        if "config" not in state:
            raise ConfigError(f"no config file: give --config FILE (or set {env})")
        typer.echo(f"# {state['config_path']}: valid")
        typer.echo(json.dumps(state["config"].model_dump(mode="json"), indent=2))
        default_map = (ctx.parent.default_map if ctx.parent is not None else None) or {}
        for verb, values in sorted(default_map.items()):
            if verb != "config":
                flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in _flat(values))
                typer.echo(f"{verb}: {flags}")

    config_check.__doc__ = f"""Validate the config file (--config or ${env}) and print it resolved.

    Prints every field (relative paths made absolute) and, per verb, the defaults the
    file gives it; a bad file is one error line naming the file, field and value. Example:

    \b
      {cli} --config {example} config
    """
    return config_check


def _flat(values: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    """``{"a": 1, "g": {"b": 2}}`` → ``[("a", 1), ("g b", 2)]``, sorted."""
    out: list[tuple[str, object]] = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            out += _flat(value, f"{prefix}{key} ")
        else:
            out.append((f"{prefix}{key}", value))
    return sorted(out)
