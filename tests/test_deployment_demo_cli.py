"""The demo's command line: flags override the YAML, real folders replace phantoms, resume key."""

from __future__ import annotations

from pathlib import Path

from deployment.commands import _likely_cause, _message_of, has_verb
from deployment.demo import _fingerprint, _parse, build_config


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
