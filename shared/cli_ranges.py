"""Accepted ranges of every numeric command-line option, in one table, checked at the edge.

Both CLIs (``radshare-site``, ``radshare-hub``) call :func:`apply_ranges` on their click
command tree before parsing, so ``--num-samples 0`` is refused by click with a line that
names the option, the value and the range, before any folder is made or model built.
A numeric option is looked up first as ``"<verb path>:<name>"`` (e.g.
``"train-labeller:resolution"``), then by its name alone; a numeric option missing from
both is a bug that ``tests/test_cli_bad_values.py`` reports, so a new verb cannot ship
an unchecked number.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["RANGES", "PowerOfTwo", "apply_ranges", "iter_commands", "numeric_options"]


class PowerOfTwo(click.IntRange):
    """An integer power of two within ``[min, max]`` (image sides in px)."""

    name = "power of two"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number & (number - 1):
            self.fail(f"{number} is not a power of two in the range {self._describe_range()}.")
        return number


def _ge(low: float, kind: type = int) -> click.ParamType:
    return click.IntRange(min=int(low)) if kind is int else click.FloatRange(min=low)


_GT0 = click.FloatRange(min=0, min_open=True)
_UNIT_OPEN = click.FloatRange(min=0, max=1, min_open=True, max_open=True)
_PORT = click.IntRange(min=0, max=65535)

# name (or "verb:name") -> accepted values. Keep sorted by key.
RANGES: dict[str, click.ParamType] = {
    "ada_kimg": _GT0,
    "ada_target": _UNIT_OPEN,
    "alpha": _UNIT_OPEN,
    "batch_size": _ge(1),
    "bootstrap": _ge(1),
    "delta": _UNIT_OPEN,
    "devices": _ge(1),
    "display_px": _ge(16),
    "epochs": _ge(1),
    "expected_nodes": _ge(0),
    "fmap_base": _ge(1),
    "fmap_max": _ge(1),
    "han_latents": _ge(1),
    "han_steps": _ge(1),
    "images_per_label": _ge(1),
    "items": _ge(1),
    "kimg_per_phase": _GT0,
    "lr": _GT0,
    "lr_patience": _ge(0),
    "max_concurrent_uploads": _ge(1),
    "max_draws": _ge(1),
    "max_epochs": _ge(1),
    "max_grad_norm": _GT0,
    "max_images": _ge(1),
    "max_near_copies": _ge(0),
    "max_resolution": PowerOfTwo(min=4, max=4096),
    "max_steps": _ge(1),
    "max_upload_mb": _ge(1),
    "min_class_images": _ge(1),
    "near_copy_ssim": click.FloatRange(min=0, max=1, min_open=True),
    "noise_multiplier": _GT0,
    "num_images": _ge(1),
    "num_permutations": click.IntRange(min=99, max=1_000_000),
    "num_samples": click.IntRange(min=2, max=1_000_000),
    "overshoot": _ge(0.0, float),
    "panel_samples": _ge(0),
    "patience": _ge(1),
    "plateau_steps": _ge(1),
    "port": _PORT,
    "rare_enrich_images": _ge(0),
    "resamples": _ge(1),
    "resolution": PowerOfTwo(min=4, max=4096),
    "resolution_px": PowerOfTwo(min=4, max=4096),
    "seed": _ge(0),
    "shard_size": _ge(1),
    "sigma": _GT0,
    "sample_every_kimg": _GT0,
    "size": _ge(1),
    "target_epsilon": _GT0,
    "tick_kimg": _GT0,
    "timeout_s": _GT0,
    "tolerance": _ge(0.0, float),
    "train-classifier:resolution_px": PowerOfTwo(min=32, max=4096),
    "train-labeller:resolution": PowerOfTwo(min=32, max=4096),
    "workers": _ge(0),
    "z_dim": _ge(1),
}


def iter_commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every leaf command below ``command`` with its verb path (``("reader-study", "build")``)."""
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from iter_commands(sub, (*path, name))
    else:
        yield path, command


def numeric_options(command: click.Command) -> list[click.Option]:
    """The command's options that take an int or a float."""
    numeric = (click.types.IntParamType, click.types.FloatParamType)
    return [
        p for p in command.params if isinstance(p, click.Option) and isinstance(p.type, numeric)
    ]


def _declared(option: click.Option) -> bool:
    bounds = (getattr(option.type, "min", None), getattr(option.type, "max", None))
    return isinstance(option.type, click.types._NumberRangeBase) and bounds != (None, None)


def _coerce(accepted: click.ParamType, option: click.Option) -> click.ParamType:
    """The range as the option's own number type (an int option with a float range, ...)."""
    is_int = isinstance(option.type, click.types.IntParamType)
    if is_int and isinstance(accepted, click.FloatRange):
        low, high = accepted.min, accepted.max
        low_int = (
            None if low is None else math.floor(low) + 1 if accepted.min_open else math.ceil(low)
        )
        high_int = (
            None if high is None else math.ceil(high) - 1 if accepted.max_open else math.floor(high)
        )
        return click.IntRange(min=low_int, max=high_int)
    if not is_int and isinstance(accepted, click.IntRange):
        return click.FloatRange(min=accepted.min, max=accepted.max)
    return accepted


def apply_ranges(root: click.Command) -> list[str]:
    """Give every numeric option of ``root``'s verbs its range from :data:`RANGES`.

    Options that already declare a range (typer ``min=``/``max=``) keep it. Returns
    ``"verb --option"`` for numeric options that have no range anywhere (a test fails on
    them).
    """
    missing = []
    for path, command in iter_commands(root):
        verb = " ".join(path)
        for option in numeric_options(command):
            if _declared(option):
                continue
            name = option.name or ""
            accepted = RANGES.get(f"{verb}:{name}", RANGES.get(name))
            if accepted is None:
                missing.append(f"{verb} {option.opts[0]}")
                continue
            option.type = _coerce(accepted, option)
    return missing
