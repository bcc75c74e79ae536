"""Bounds a publish header must meet before a byte of its upload is accepted.

A manifest is small; what it *declares* can be absurd. Three checks run on the
header, after the role check and before staging, each an ``ArtifactError``
(``INVALID_ARGUMENT``) naming the field:

* **nesting** (``check_json_depth``, on the raw bytes, before ``json.loads``):
  deeper than ``MAX_JSON_DEPTH`` levels is refused; Python's parser would
  otherwise end in a ``RecursionError`` (an ``INTERNAL`` error);
* **numbers** (``check_numbers``): an integer outside the signed 64-bit range
  overflows every consumer after the parser (SQLite, torch shapes);
* **implied sizes** (``check_implied_sizes``): a network config must fit its
  declared weights file. From the config alone, in exact integer arithmetic and
  without building anything, a lower bound on the bytes of the weight tensors it
  implies is computed; a config that needs more bytes than the manifest declares
  (or a resolution above ``MAX_RESOLUTION_PX``) is refused, so the tensor check at
  commit never builds a network whose shapes overflow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shared.artifacts.manifest import BundleManifest
from shared.errors import ArtifactError
from shared.networks.generator import GeneratorConfig, feature_maps

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_RESOLUTION_PX",
    "check_implied_sizes",
    "check_json_depth",
    "check_numbers",
    "generator_min_weight_bytes",
    "labeller_min_weight_bytes",
]

#: Deepest JSON nesting a manifest may use (real ones use 4).
MAX_JSON_DEPTH = 32
#: Largest image side any network in a bundle may declare (16384 px).
MAX_RESOLUTION_PX = 2**14

_INT64 = 2**63
_FLOAT32_BYTES = 4
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")
_LAST_KEY = re.compile(rb'"([^"\\]{1,64})"\s*:\s*$')


def _blank_strings(data: bytes) -> bytes:
    """``data`` with every string's content replaced by ``x`` (same length: offsets hold)."""
    return _STRING.sub(lambda m: b'"' + b"x" * (len(m.group()) - 2) + b'"', data)


def check_json_depth(data: bytes, *, where: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """ArtifactError if the JSON text ``data`` nests deeper than ``max_depth`` levels.

    Scans brackets outside strings (no recursion, linear time); the error names the
    last key before the too-deep bracket.
    """
    blanked, depth = _blank_strings(data), 0
    for match in _BRACKET.finditer(blanked):
        depth += 1 if match.group() in (b"[", b"{") else -1
        if depth > max_depth:
            keys = _LAST_KEY.findall(data[: match.start()].rstrip(b" \t\r\n[{"))
            field = keys[-1].decode("utf-8", "replace") if keys else "(top level)"
            raise ArtifactError(
                f"{where}: field {field!r} nests JSON deeper than {max_depth} levels "
                f"(at byte {match.start()}); a manifest needs a few"
            )


def check_numbers(raw: Any, *, where: str) -> None:
    """ArtifactError naming the first integer outside the signed 64-bit range (iterative walk)."""
    stack: list[tuple[str, Any]] = [("", raw)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):  # pushed reversed: reported in document order
            items = [(f"{path}.{key}" if path else str(key), v) for key, v in value.items()]
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(value)]))
        elif (
            isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64
        ):
            raise ArtifactError(
                f"{where}: field {path!r}: an integer of {len(str(abs(value)))} digits "
                "overflows 64 bits"
            )


def generator_min_weight_bytes(cfg: GeneratorConfig) -> int:
    """A lower bound on ``Generator(cfg)``'s F32 weight bytes (dense, conv and toRGB weights).

    Mirrors ``shared.networks.generator.Generator``: a 4×4 block (dense ``z_dim → 16·nf(1)``
    and a 3×3 conv), two 3×3 convs per doubling, a 1×1 toRGB per level; biases are left out.
    """

    def nf(stage: int) -> int:
        return feature_maps(stage, cfg.fmap_base, cfg.fmap_max, cfg.fmap_min)

    weights = cfg.z_dim * 16 * nf(1) + 9 * nf(1) ** 2 + nf(1) * cfg.num_channels
    for r in range(3, cfg.max_res_log2 + 1):
        weights += 9 * nf(r - 2) * nf(r - 1) + 9 * nf(r - 1) ** 2 + nf(r - 1) * cfg.num_channels
    return weights * _FLOAT32_BYTES


def labeller_min_weight_bytes(cfg: Any) -> int:
    """A lower bound on a DenseNet labeller's F32 weight bytes: stem and dense-layer convs.

    Each dense layer holds at least a 3×3 conv from ``4·growth_rate`` to ``growth_rate``
    channels (MONAI's ``bn_size`` = 4); the stem a 7×7 conv to ``init_features``.
    """
    layers = sum(cfg.block_config)
    weights = 49 * cfg.init_features + layers * 36 * cfg.growth_rate**2
    return weights * _FLOAT32_BYTES


#: Manifest field holding a kind's network config → lower bound on its weight bytes.
_BOUNDS: dict[str, Callable[[Any], int]] = {
    "generator_config": generator_min_weight_bytes,
    "labeller_config": labeller_min_weight_bytes,
}


def _describe(cfg: BaseModel) -> str:
    values = {k: v for k, v in cfg.model_dump().items() if isinstance(v, int | tuple)}
    return ", ".join(f"{k}={v}" for k, v in values.items())


def check_implied_sizes(model: BundleManifest, *, where: str) -> None:
    """ArtifactError if a network config in ``model`` cannot fit the weights it declares."""
    weights_bytes = sum(
        entry.size_bytes for name, entry in model.files.items() if name.endswith(".safetensors")
    )
    for field, lower_bound in _BOUNDS.items():
        cfg = getattr(model, field, None)
        if not isinstance(cfg, BaseModel):
            continue
        resolution_px = getattr(cfg, "resolution_px", 0)
        if resolution_px > MAX_RESOLUTION_PX:
            raise ArtifactError(
                f"{where}: field '{field}.resolution_px': {resolution_px} exceeds the "
                f"hub's limit of {MAX_RESOLUTION_PX} px"
            )
        needed = lower_bound(cfg)
        if needed > weights_bytes:
            raise ArtifactError(
                f"{where}: field {field!r} ({_describe(cfg)}) implies at least {needed} bytes "
                f"of weights, but the manifest declares {weights_bytes} bytes of .safetensors"
            )
