"""The demo's command line: flags override the YAML, real folders replace phantoms, resume key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployment.commands import (
    StepFailedError,
    _likely_cause,
    _message_of,
    has_verb,
    run_command,
    run_concurrently,
)
from deployment.demo import _fingerprint, _parse, build_config
from shared.errors import ConfigError


def test_defaults_are_two_phantom_sites_on_the_cpu_profile():
    config = build_config(_parse([]))
    assert config.profile == "cpu" and config.out_dir == Path("demo-out")
    assert [(s.site_id, s.phantom_style, s.data_dir) for s in config.sites] == [
        ("a", "demo-a", None),
        ("b", "demo-b", None),
    ]


def test_real_folders_and_flags_override(tmp_path: Path):
    args = _parse(
        ["--data-a", str(tmp_path / "a"), "--data-b", "rel/b", "--profile", "tiny", "--out", "x"]
    )
    config = build_config(args)
    assert config.sites[0].data_dir == tmp_path / "a"
    assert config.sites[1].data_dir == Path("rel/b").resolve()
    assert config.profile == "tiny" and config.out_dir == Path("x")
    assert config.seed == 0 and build_config(_parse(["--seed", "3"])).seed == 3


def test_a_negative_seed_is_refused_naming_the_field_and_value():
    with pytest.raises(ConfigError, match=r"command line: field 'seed'.*\(value -1\)"):
        build_config(_parse(["--seed", "-1"]))


def test_resume_key_ignores_the_output_folder_but_not_the_data():
    base = build_config(_parse(["--profile", "tiny"]))
    moved = build_config(_parse(["--profile", "tiny", "--out", "elsewhere"]))
    real = build_config(_parse(["--profile", "tiny", "--data-a", "/data/a"]))
    assert _fingerprint(base) == _fingerprint(moved)
    assert _fingerprint(base) != _fingerprint(real)
    assert _fingerprint(base) != _fingerprint(build_config(_parse(["--profile", "cpu"])))


def test_verbs_are_looked_up_in_the_clis():
    assert has_verb("radshare-site", "ingest") and has_verb("radshare-hub", "serve")
    assert not has_verb("radshare-site", "no-such-verb")


def test_progress_and_errors_are_read_from_structured_lines():
    line = r'ts=1 component=site-a msg="\rEpoch 0: 3%\rEpoch 0: 9% kimg=0.4"'
    assert _message_of(line) == "Epoch 0: 9% kimg=0.4"
    assert _likely_cause(["step 1", "ValueError: bad resolution", "exit"]) == (
        "ValueError: bad resolution"
    )


def _stamp_job(tmp_path: Path, name: str):
    """A job that runs one real step: a shell writing its start and end times (ns)."""
    script = f"date +%s%N > {tmp_path}/{name}.start; sleep 1; date +%s%N > {tmp_path}/{name}.end"
    argv = ["/bin/sh", "-c", script]
    return lambda: run_command("test", argv, log_dir=tmp_path / "logs", what=name)


def _interval(tmp_path: Path, name: str) -> tuple[int, int]:
    start, end = (int((tmp_path / f"{name}.{t}").read_text()) for t in ("start", "end"))
    return start, end


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to run 2 steps")
def test_one_thread_steps_run_side_by_side_and_all_core_steps_one_at_a_time(tmp_path: Path):
    run_concurrently([_stamp_job(tmp_path, "a"), _stamp_job(tmp_path, "b")], threads_per_step=1)
    (a0, a1), (b0, b1) = _interval(tmp_path, "a"), _interval(tmp_path, "b")
    assert a0 < b1 and b0 < a1  # the two steps overlapped
    run_concurrently([_stamp_job(tmp_path, "c"), _stamp_job(tmp_path, "d")], threads_per_step=0)
    c1, d0 = _interval(tmp_path, "c")[1], _interval(tmp_path, "d")[0]
    assert c1 <= d0  # torch's default threads: one after the other


def test_a_failed_job_lets_the_others_finish(tmp_path: Path):
    def fails() -> None:
        run_command("test", ["/bin/sh", "-c", "exit 3"], log_dir=tmp_path, what="bad step")

    with pytest.raises(StepFailedError, match="bad step: exit 3"):
        run_concurrently([fails, _stamp_job(tmp_path, "ok")], threads_per_step=1)
    assert (tmp_path / "ok.end").is_file()


def test_ctrl_c_stops_every_running_step_and_starts_no_new_one(tmp_path: Path):
    # In its own interpreter: stopping is for good in a process (the demo is exiting).
    script = f"""
import os
import signal
import threading
from pathlib import Path
from deployment.commands import StepFailedError, run_command, run_concurrently
log = Path({str(tmp_path)!r})
outcomes = []
def long_step():
    try:
        run_command("t", ["/bin/sh", "-c", "sleep 60; touch {tmp_path}/finished"], log_dir=log,
                    what="long")
    except StepFailedError as error:
        outcomes.append(str(error).splitlines()[0])
    try:
        run_command("t", ["/bin/sh", "-c", "touch {tmp_path}/next"], log_dir=log, what="next")
    except StepFailedError as error:
        outcomes.append(str(error))
def short_step():
    run_command("t", ["/bin/sh", "-c", "true"], log_dir=log, what="short")
signal.signal(signal.SIGINT, signal.default_int_handler)  # xdist workers ignore SIGINT
threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl+C after 2 s
try:
    run_concurrently([long_step, short_step], threads_per_step=1)
except KeyboardInterrupt:
    print("interrupted", outcomes)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "interrupted" in result.stdout, result.stdout + result.stderr
    assert "long: exit -15" in result.stdout  # SIGTERM
    assert "next: not started, the demo is stopping" in result.stdout
    assert not (tmp_path / "finished").exists() and not (tmp_path / "next").exists()
