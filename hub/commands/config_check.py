"""``radshare-hub config``: check the hub's config file and show what each verb takes from it."""

from __future__ import annotations

import json

import typer

__all__ = ["config_check"]


def config_check(ctx: typer.Context) -> None:
    """Validate the config file (--config or $RADSHARE_HUB_CONFIG) and print it resolved.

    Prints every field (relative paths made absolute) and, per verb, the defaults the
    file gives it; a bad file is one error line naming the file, field and value. Example:

    \b
      radshare-hub --config /etc/radshare/hub.yaml config
    """
    from shared.errors import ConfigError

    state = (ctx.parent.obj if ctx.parent is not None else None) or {}
    if "config" not in state:
        raise ConfigError("no config file: give --config FILE (or set RADSHARE_HUB_CONFIG)")
    cfg = state["config"]
    typer.echo(f"# {state['config_path']}: valid")
    typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    default_map = (ctx.parent.default_map if ctx.parent is not None else None) or {}
    for verb, values in sorted(default_map.items()):
        if verb == "config":
            continue
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(_flat(values)))
        typer.echo(f"{verb}: {flags}")


def _flat(values: dict, prefix: str = "") -> list[tuple[str, object]]:  # type: ignore[type-arg]
    out: list[tuple[str, object]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key} ")
        else:
            out.append((f"{prefix}{key}", value))
    return out
