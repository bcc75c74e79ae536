"""Every numeric option of every CLI verb refuses an out-of-range value in one line, exit code 2.

The verbs and options are enumerated from the typer apps (click's command objects), so a
verb added later is covered without editing this file; a numeric option with no declared
range fails :func:`test_every_numeric_option_has_a_range`. Each refusal must name the
option, exit with code 2, print no traceback and leave the working folder empty.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
import pytest
import typer

from hub.cli import app as hub_app
from shared.cli_main import run_cli
from shared.cli_ranges import PowerOfTwo, apply_ranges, iter_commands, numeric_options
from site_node.cli import app as site_app

APPS = {"radshare-hub": hub_app, "radshare-site": site_app}


def _bad_values(option: click.Option) -> list[str]:
    """Values just outside the option's declared range (and a non-power of two)."""
    kind = option.type
    assert isinstance(kind, click.types._NumberRangeBase)
    is_int = isinstance(kind, click.IntRange)
    step = 1 if is_int else 0.5
    bad: list[float] = []
    if kind.min is not None:
        bad.append(kind.min if kind.min_open else kind.min - step)
    if kind.max is not None:
        bad.append(kind.max if kind.max_open else kind.max + step)
    if isinstance(kind, PowerOfTwo):
        bad.append(3 * max(int(kind.min or 4), 4))  # in range, not a power of two
    return [str(int(v)) if is_int else repr(float(v)) for v in bad]


def _cases() -> list[tuple[str, tuple[str, ...], str, str]]:
    cases = []
    for prog, app in APPS.items():
        root = typer.main.get_command(app)
        apply_ranges(root)
        for path, command in iter_commands(root):
            for option in numeric_options(command):
                for value in _bad_values(option):
                    cases.append((prog, path, option.opts[0], value))
    return cases


def _run(prog: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = run_cli(APPS[prog], argv, prog=prog)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _assert_one_line_refusal(code: int, output: str, option: str, folder: Path) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert "Traceback" not in output
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and option in lines[0], lines[0]
    assert list(folder.iterdir()) == [], "a refused command left files behind"


def test_every_numeric_option_has_a_range() -> None:
    for prog, app in APPS.items():
        missing = apply_ranges(typer.main.get_command(app))
        assert missing == [], f"{prog}: add these to shared.cli_ranges.RANGES: {missing}"


@pytest.mark.parametrize(("prog", "path", "option", "value"), _cases())
def test_out_of_range_value_is_one_line(
    prog: str,
    path: tuple[str, ...],
    option: str,
    value: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = _run(prog, [*path, option, value], capsys)
    _assert_one_line_refusal(code, output, option, tmp_path)
    assert value.rstrip("0").rstrip(".") in output or str(math.floor(float(value))) in output


@pytest.mark.parametrize(
    ("prog", "argv", "option"),
    [
        # Past the edge, inside the option models (pydantic): still one line naming the option.
        ("radshare-site", ["train", "--cache", "c", "--out", "run", "--batch-sizes", "6:8"],
         "--batch-sizes"),
        ("radshare-site", ["train", "--cache", "c", "--out", "run", "--dp", "--delta", "2"],
         "--delta"),
        ("radshare-site", ["train", "--cache", "c", "--out", "run", "--resolution", "48"],
         "--resolution"),
        ("radshare-site", ["train", "--cache", "c", "--out", "run", "--kimg-per-phase", "0"],
         "--kimg-per-phase"),
        ("radshare-site", ["train-labeller", "--cache", "c", "--out", "run", "--resolution", "8"],
         "--resolution"),
        ("radshare-site", ["audit", "--cache", "c", "--run", "r", "--num-samples", "0"],
         "--num-samples"),
        # A missing cache is refused before the run folder exists (a retry is not blocked).
        ("radshare-site", ["train", "--cache", "nowhere", "--out", "run", "--profile", "tiny"],
         "nowhere"),
        ("radshare-site", ["train-labeller", "--cache", "nowhere", "--out", "run"], "nowhere"),
    ],
)  # fmt: skip
def test_refused_command_names_option_and_leaves_nothing(
    prog: str,
    argv: list[str],
    option: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = _run(prog, argv, capsys)
    _assert_one_line_refusal(code, output, option, tmp_path)


def test_validation_error_maps_field_to_option() -> None:
    from pydantic import BaseModel, Field, ValidationError

    from shared.cli_main import describe_validation_error

    class Options(BaseModel):
        resolution_px: int = Field(ge=4)

    root = typer.main.get_command(site_app)
    command = root.commands["train"]  # type: ignore[attr-defined]
    with pytest.raises(ValidationError) as caught:
        Options(resolution_px=2)
    text = describe_validation_error(caught.value, command, ["train", "--resolution", "2"])
    assert text == "--resolution 2: input should be greater than or equal to 4"


def _leaf_commands() -> list[tuple[str, tuple[str, ...], click.Command]]:
    out = []
    for prog, app in APPS.items():
        for path, command in iter_commands(typer.main.get_command(app)):
            out.append((prog, path, command))
    return out


@pytest.mark.parametrize(("prog", "path", "command"), _leaf_commands())
def test_help_has_a_complete_example(
    prog: str, path: tuple[str, ...], command: click.Command
) -> None:
    """No help text stops at "example:"; every verb shows a command line that runs it."""
    text = command.help or ""
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    assert not first_line.rstrip().lower().endswith(("example:", "examples:")), first_line
    assert f"{prog} " in text and path[-1] in text, f"{prog} {' '.join(path)}: no example"
