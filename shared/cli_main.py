"""Run a radshare CLI the way a mature tool does: one-line errors, exit code 2, no traceback.

Both console scripts end in :func:`run_cli`. It applies the option ranges of
:mod:`shared.cli_ranges`, runs the typer app without click's standalone handling, and
turns every user error into ONE line on stderr::

    error: radshare-site train: --resolution 48: 48 is not a power of two in the range 4<=x<=4096.
    error: radshare-site audit: --num-samples 0: input should be greater than or equal to 2

* click's usage errors (bad range, unknown option, missing option) → the message, joined;
* a pydantic ``ValidationError`` raised while a command builds its option model → the
  CLI option whose field failed (``resolution_px`` → ``--resolution``), the value, and
  pydantic's statement of the accepted range;
* any :class:`shared.errors.RadshareError` → its message.

Exit codes: 0 success, 1 a check the command reports as failed (``typer.Exit(1)``), 2 a
user error, 130 interrupted.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

import click
import typer
from pydantic import ValidationError

from shared.cli_ranges import apply_ranges
from shared.errors import RadshareError

__all__ = ["describe_validation_error", "one_line", "resolve_verb", "run_cli"]

# Option-model field -> CLI option name (param name), where the two differ beyond a unit suffix.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "bootstrap_resamples": ("bootstrap",),
    "cache_dir": ("cache",),
    "class_names": ("classes",),
    "early_stop_patience_epochs": ("patience",),
    "learning_rate": ("lr",),
    "lr_patience_epochs": ("lr_patience",),
    "max_resolution_px": ("max_resolution",),
    "num_images": ("size", "num_images"),
    "num_resamples": ("resamples",),
    "num_workers": ("workers",),
    "out_dir": ("out",),
    "overshoot_logit": ("overshoot",),
    "plateau_patience_steps": ("plateau_steps",),
    "run_dir": ("out", "run"),
    "sample_seed": ("seed",),
    "split_fractions": ("split",),
    "ssim_window": ("window",),
}
_UNIT_SUFFIXES = ("_px", "_s", "_kimg", "_epochs", "_steps", "_dir", "_path", "_mb")


def one_line(text: str) -> str:
    """``text`` with its lines joined (and repeated sentences dropped): an error is one line."""
    parts: list[str] = []
    for line in str(text).splitlines():
        for sentence in re.split(r"(?<=[.?!])\s+", line.strip()):
            if sentence and sentence not in parts:
                parts.append(sentence)
    return " ".join(parts)


def resolve_verb(root: click.Command, argv: Sequence[str]) -> tuple[list[str], click.Command]:
    """The verb path and leaf command that ``argv`` names (options of groups are skipped)."""
    path: list[str] = []
    command = root
    for arg in argv:
        if not isinstance(command, click.Group):
            break
        if arg in command.commands:
            path.append(arg)
            command = command.commands[arg]
    return path, command


def _argv_values(argv: Sequence[str]) -> dict[str, str]:
    """``--opt value`` / ``--opt=value`` pairs as given (last one wins)."""
    values: dict[str, str] = {}
    for index, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name, sep, value = arg.partition("=")
        if sep:
            values[name] = value
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            values[name] = argv[index + 1]
    return values


def _field_candidates(field: str) -> list[str]:
    names = [field, *FIELD_ALIASES.get(field, ())]
    names += [field[: -len(s)] for s in _UNIT_SUFFIXES if field.endswith(s)]
    return names


def _option_for(field: str, value: Any, command: click.Command, argv: Sequence[str]) -> str | None:
    """The CLI option (``--resolution``) that set the model field ``field``, if one did."""
    options = [p for p in command.params if isinstance(p, click.Option)]
    by_name = {p.name: p for p in options}
    for name in _field_candidates(field):
        if name in by_name:
            return by_name[name].opts[0]
    given = _argv_values(argv)
    matches = [
        p.opts[0] for p in options if any(given.get(o) == str(value) for o in p.opts if value)
    ]
    return matches[0] if len(matches) == 1 else None


def describe_validation_error(
    error: ValidationError, command: click.Command | None = None, argv: Sequence[str] = ()
) -> str:
    """One line: the CLI option (or the model field), the value, and what is accepted."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"] if not isinstance(part, int)]
    field = loc[-1] if loc else error.title
    value = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    option = _option_for(field, value, command, argv) if command is not None and loc else None
    more = len(error.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    if option is not None:
        shown = _argv_values(argv).get(option, value)
        return f"{option} {shown}: {message}{tail}"
    if not loc:  # a check across fields (e.g. batch sizes and devices)
        return f"{error.title}: {message}{tail}"
    return f"{error.title}: field {'.'.join(loc)!r}: {message} (value {value!r}){tail}"


def _fail(prog: str, text: str) -> int:
    typer.secho(f"error: {prog}: {one_line(text)}", fg=typer.colors.RED, err=True)
    return 2


def run_cli(app: typer.Typer, argv: Sequence[str] | None = None, prog: str = "radshare") -> int:
    """Run ``app`` on ``argv`` (default ``sys.argv[1:]``); return the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    root = typer.main.get_command(app)
    apply_ranges(root)
    path, command = resolve_verb(root, args)
    where = " ".join([prog, *path])
    try:
        result = root.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        typer.secho(f"error: {where}: interrupted", err=True)
        return 130
    except click.ClickException as error:
        return _fail(where, error.format_message())
    except ValidationError as error:
        return _fail(where, describe_validation_error(error, command, args))
    except RadshareError as error:
        return _fail(where, str(error))
    except KeyboardInterrupt:
        typer.secho(f"error: {where}: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0
