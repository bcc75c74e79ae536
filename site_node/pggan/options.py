"""Training options: one validated pydantic model, written to ``options.json`` before work starts.

Defaults are the papers' settings (full-size PGGAN, 600 kimg per phase, Han et al.'s batch
sizes). Profiles are presets for the machines people actually have; explicit values
override the profile::

    TrainOptions.from_profile("tiny", cache_dir=..., run_dir=...)   # CPU demo, ~2 minutes
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import ConfigError
from shared.networks.generator import GeneratorConfig, power_of_two_px
from site_node.pggan.augment import AugmentMode
from site_node.pggan.discriminator import DiscriminatorConfig
from site_node.pggan.schedule import DEFAULT_BATCH_SIZES, Phase, ProgressSchedule, build_phases
from site_node.pggan.warm_start import WarmStart
from site_node.privacy.config import DPOptions

__all__ = ["DEFAULT_AUGMENT", "PROFILES", "RUNTIME_FIELDS", "TrainOptions"]

# 2: critic augmentation (``augment``, ``ada_*``) and ``warm_start``. A version-1
# options.json (no ``augment`` field) was trained without augmentation and resumes so.
OPTIONS_SCHEMA_VERSION = 2

#: ``augment`` when not given (DP runs: always "none"). Measured by
#: benchmarks/small_site_gan.py (docs/benchmarks.md, "Small-site GANs"): ADA lowered the
#: sample FD in 6 of 6 runs but not the archive classifier's AUC (32 px: a tie; 64 px: none
#: ahead in 2 of 2 seeds), so augmentation stays opt-in until a longer (GPU) run shows it helps.
DEFAULT_AUGMENT: AugmentMode = "none"

# Presets. "tiny": the CPU demo (32 px, 10.5 kimg; measured 47 s on 2 free Xeon threads,
# ~4 min on a 2-core box shared with others); "cpu": 64 px, 110 kimg, roughly an hour on a
# laptop; "gpu": the papers' network and schedule (600 kimg per phase, Han et al.'s batch
# sizes) at 256 px.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "resolution_px": 32,
        "z_dim": 64,
        "fmap_base": 256,
        "fmap_max": 32,
        "kimg_per_phase": 1.5,
        "batch_sizes": {4: 16, 8: 16, 16: 16, 32: 16},
        "tick_kimg": 0.5,
        "sample_every_kimg": 1.5,
        "ema_halflife_kimg": 1.0,
        "ada_kimg": 5.0,
    },
    "cpu": {
        "resolution_px": 64,
        "z_dim": 128,
        "fmap_base": 512,
        "fmap_max": 64,
        "kimg_per_phase": 10.0,
        "batch_sizes": {4: 32, 8: 32, 16: 32, 32: 32, 64: 32},
        "tick_kimg": 2.0,
        "sample_every_kimg": 10.0,
        "ema_halflife_kimg": 2.0,
        "ada_kimg": 20.0,
    },
    "gpu": {
        "resolution_px": 256,
        "z_dim": 512,
        "fmap_base": 8192,
        "fmap_max": 512,
        "kimg_per_phase": 600.0,
        "tick_kimg": 20.0,
        "sample_every_kimg": 200.0,
    },
}

# Fields a resumed run may change: where and how it runs, not what it computes.
RUNTIME_FIELDS = frozenset(
    {"accelerator", "devices", "strategy", "precision", "profile", "progress_bar"}
)


class TrainOptions(BaseModel):
    """Everything that determines a PGGAN training run (``options.json`` of the run folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = OPTIONS_SCHEMA_VERSION
    profile: str | None = Field(None, description="preset these options started from")
    cache_dir: Path
    run_dir: Path
    # Networks.
    resolution_px: int = 64
    z_dim: int = Field(512, ge=1)
    fmap_base: int = Field(8192, ge=1)
    fmap_max: int = Field(512, ge=1)
    use_minibatch_stddev: bool = True
    mbstd_group_size: int = Field(4, ge=1)
    # Schedule.
    kimg_per_phase: float = Field(600.0, gt=0, description="kimg per stabilise phase")
    fade_kimg: float | None = Field(None, gt=0, description="kimg per fade phase; default: same")
    batch_sizes: dict[int, int] = Field(default_factory=lambda: dict(DEFAULT_BATCH_SIZES))
    # Losses and optimisers.
    gp_lambda: float = Field(10.0, ge=0)
    drift_epsilon: float = Field(1e-3, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    adam_betas: tuple[float, float] = (0.0, 0.99)
    adam_eps: float = Field(1e-8, gt=0)
    ema_halflife_kimg: float = Field(10.0, gt=0, description="G_ema half-life (Karras: 10)")
    ema_rampup: float | None = Field(0.05, gt=0, description="half-life <= rampup * cur_kimg")
    # Critic augmentation (site_node.pggan.augment): ADA, DiffAugment or none.
    augment: AugmentMode = DEFAULT_AUGMENT
    ada_target: float = Field(0.6, gt=0, lt=1, description="ADA: target of r_t")
    ada_kimg: float = Field(100.0, gt=0, description="ADA: kimg for p to go from 0 to 1")
    # Warm start (site_node.pggan.warm_start): a base G/D pair; None: from scratch.
    warm_start: WarmStart | None = None
    # Data.
    horizontal_flip: bool = Field(False, description="off: laterality matters in CXR")
    seed: int = Field(0, ge=0)
    # Differential privacy (site_node.privacy): DP-SGD on the critic; None: off.
    dp: DPOptions | None = None
    # Bookkeeping.
    tick_kimg: float = Field(4.0, gt=0, description="one Lightning epoch; checkpoint cadence")
    sample_every_kimg: float = Field(100.0, gt=0)
    num_grid_images: int = Field(16, ge=1)
    # Runtime.
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    progress_bar: bool = True

    @field_validator("resolution_px")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        return power_of_two_px(value)

    @field_validator("batch_sizes")
    @classmethod
    def _complete_batch_sizes(cls, value: dict[int, int]) -> dict[int, int]:
        merged = {**DEFAULT_BATCH_SIZES, **value}
        bad = {res: size for res, size in merged.items() if size < 1 or res & (res - 1)}
        if bad:
            raise ValueError(f"batch_sizes needs power-of-two resolutions and sizes >= 1: {bad}")
        return dict(sorted(merged.items()))

    @model_validator(mode="after")
    def _batches_split_over_devices(self) -> TrainOptions:
        for res_px, size in self.batch_sizes.items():
            if res_px <= self.resolution_px and size % self.devices:
                raise ValueError(
                    f"batch_sizes[{res_px}]={size} does not split over devices={self.devices}"
                )
        return self

    @model_validator(mode="before")
    @classmethod
    def _augment_default(cls, values: Any) -> Any:
        """``augment`` when not given: "none" for DP runs and version-1 options files."""
        if not isinstance(values, dict) or "augment" in values:
            return values
        old = values.get("schema_version", OPTIONS_SCHEMA_VERSION) < 2
        return {**values, "augment": "none" if old or values.get("dp") else DEFAULT_AUGMENT}

    @model_validator(mode="after")
    def _dp_critic_sees_one_sample(self) -> TrainOptions:
        if self.dp is not None and self.augment != "none":
            raise ValueError(
                f"dp needs augment='none', got {self.augment!r} (the DP-SGD critic step does "
                "not augment, and ADA's p is a function of the critic's scores on private "
                "reals that the accountant does not count)"
            )
        if self.dp is not None and self.use_minibatch_stddev:
            raise ValueError("dp needs use_minibatch_stddev=False (minibatch stddev mixes samples)")
        if self.dp is not None and self.devices != 1:
            raise ValueError(f"dp trains on one device, got devices={self.devices}")
        return self

    @classmethod
    def from_profile(cls, profile: str | None, **values: Any) -> TrainOptions:
        """Options from ``profile`` (``tiny``/``cpu``/``gpu`` or None) overridden by ``values``."""
        if profile is not None and profile not in PROFILES:
            close = difflib.get_close_matches(profile, PROFILES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"--profile: unknown profile {profile!r}; valid: {', '.join(PROFILES)}{hint}"
            )
        preset = dict(PROFILES.get(profile or "", {}))
        if "batch_sizes" in values and "batch_sizes" in preset:
            values["batch_sizes"] = {**preset["batch_sizes"], **values["batch_sizes"]}
        return cls(**{**preset, **values, "profile": profile})

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            resolution_px=self.resolution_px,
            z_dim=self.z_dim,
            fmap_base=self.fmap_base,
            fmap_max=self.fmap_max,
            fmap_min=1,
            num_channels=1,
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig.mirror(
            self.generator_config(),
            use_minibatch_stddev=self.use_minibatch_stddev,
            mbstd_group_size=self.mbstd_group_size,
        )

    def schedule(self) -> ProgressSchedule:
        """Phases from 4×4 up; a warm start fine-tunes at ``resolution_px`` only (one phase)."""
        fade_kimg = self.fade_kimg if self.fade_kimg is not None else self.kimg_per_phase
        phases = build_phases(self.resolution_px, self.kimg_per_phase, fade_kimg, self.batch_sizes)
        if self.warm_start is not None:
            last = phases[-1]
            phases = [Phase("stabilise", last.res_log2, 0, last.length_nimg, last.batch_size)]
        return ProgressSchedule(phases)

    def differences(self, other: TrainOptions) -> dict[str, tuple[Any, Any]]:
        """Fields (other than runtime ones) whose values differ: ``{name: (self, other)}``."""
        mine, theirs = self.model_dump(), other.model_dump()
        return {
            name: (mine[name], theirs[name])
            for name in mine
            if name not in RUNTIME_FIELDS and mine[name] != theirs[name]
        }
