"""Warm start: begin a site's PGGAN from a base G/D pair and fine-tune it on the site's images.

The base is a radshare PGGAN checkpoint (``<run>/checkpoints/last.ckpt``, or the run
folder that holds it) trained on public images (NIH ChestX-ray14 is public), which the
site holds as a local file. It carries the critic, so it is never a published bundle
(a bundle holds G_ema only): it travels out of band, and the operator pins it by the
sha256 they were given (``--warm-start-sha256``); a file with another hash is refused
before it is parsed. Parsing is ``torch.load(weights_only=True)`` on the verified bytes:
tensors and plain containers, no code.

What is taken: G, D and G_ema, exactly (strict state-dict loads). What is not: the Adam
moments, the counters and the schedule; the fine-tune runs its own schedule, one
stabilise phase at the target resolution (``TrainOptions.schedule``). The base must have
the same networks: resolution, latent size, feature maps, minibatch stddev; a mismatch
is a one-line :class:`~shared.errors.ConfigError` naming the file and the field. The
published manifest records the base's sha256 (``training.warm_start``).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from shared.errors import ConfigError

__all__ = [
    "ARCHITECTURE_FIELDS",
    "WarmStart",
    "base_checkpoint_path",
    "check_warm_start",
    "load_warm_start",
]

#: Options a base must share with the run it starts (they shape G and D).
ARCHITECTURE_FIELDS = (
    "resolution_px",
    "z_dim",
    "fmap_base",
    "fmap_max",
    "use_minibatch_stddev",
    "mbstd_group_size",
)
_NETWORKS = ("G", "D", "G_ema")


class WarmStart(BaseModel):
    """Where the base checkpoint is and the sha256 it must have."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: Path = Field(description="base run folder or its checkpoints/last.ckpt")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the checkpoint file")


def base_checkpoint_path(path: Path) -> Path:
    """The checkpoint file of a base given as a run folder or as the file itself."""
    path = Path(path)
    file = path / "checkpoints" / "last.ckpt" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"--warm-start: {file}: missing (give a run folder or a .ckpt file)")
    return file


def _read_verified(warm: WarmStart) -> tuple[Path, dict[str, Any]]:
    """The base checkpoint's contents, read once and parsed only if its sha256 matches."""
    file = base_checkpoint_path(warm.checkpoint)
    data = file.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != warm.sha256:
        raise ConfigError(
            f"{file}: sha256 is {actual}, not the --warm-start-sha256 {warm.sha256}; "
            "refusing an unverified base"
        )
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file: one line, the file named
        raise ConfigError(f"{file}: not a PGGAN checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or "pggan" not in checkpoint:
        raise ConfigError(f"{file}: has no 'pggan' state: not a radshare PGGAN checkpoint")
    return file, checkpoint


def _check_architecture(file: Path, base: dict[str, Any], run: dict[str, Any]) -> None:
    for name in ARCHITECTURE_FIELDS:
        if base.get(name) != run[name]:
            raise ConfigError(
                f"{file}: base field {name} is {base.get(name)!r}, this run's is {run[name]!r}; "
                "a warm start needs the same networks"
            )


def _load_network(file: Path, network: nn.Module, name: str, state: dict[str, Any]) -> None:
    prefix = f"{name}."
    tensors = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    mine = network.state_dict()
    for key, value in mine.items():
        if key not in tensors:
            raise ConfigError(f"{file}: field state_dict.{prefix}{key} is missing")
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise ConfigError(
                f"{file}: field state_dict.{prefix}{key} has shape {tuple(tensors[key].shape)}, "
                f"this run's network needs {tuple(value.shape)} (channels or feature maps differ)"
            )
    extra = sorted(set(tensors) - set(mine))
    if extra:
        raise ConfigError(f"{file}: field state_dict.{prefix}{extra[0]} is not in this network")
    network.load_state_dict(tensors, strict=True)


def check_warm_start(warm: WarmStart, run_options: dict[str, Any]) -> None:
    """Refuse (ConfigError) a base that is missing, unverified, foreign or of other networks.

    Run before the run folder is made, so a refused warm start leaves nothing behind.
    """
    file, checkpoint = _read_verified(warm)
    _check_architecture(file, json.loads(checkpoint["pggan"]["options"]), run_options)


def load_warm_start(module: nn.Module, warm: WarmStart, run_options: dict[str, Any]) -> dict:
    """Load the base's G, D and G_ema into ``module``; returns the manifest's record of the base.

    ``run_options``: this run's options as a dict (``TrainOptions.model_dump()``).
    Raises ConfigError for a missing file, a sha256 mismatch, a foreign file, or a base
    whose networks differ from this run's (naming the file and the field).
    """
    file, checkpoint = _read_verified(warm)
    saved = checkpoint["pggan"]
    base_options = json.loads(saved["options"])
    _check_architecture(file, base_options, run_options)
    state = checkpoint.get("state_dict", {})
    for name in _NETWORKS:
        _load_network(file, getattr(module, name), name, state)
    return {
        "base_sha256": warm.sha256,
        "base_kimg": int(saved["cur_nimg"]) / 1000,
        "base_resolution_px": int(base_options["resolution_px"]),
        "base_augment": base_options.get("augment", "none"),
    }
