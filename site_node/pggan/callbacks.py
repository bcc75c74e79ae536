"""Lightning callbacks of a PGGAN run: tick checkpoints, sample grids, tick reports, progress bar.

A tick is one Lightning epoch (``tick_kimg`` images). At every tick end the run's
``checkpoints/last.ckpt`` is replaced atomically; an interrupt (Ctrl+C or SIGTERM) that
arrives between steps saves one too, so at most one step is lost.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.utilities.exceptions import SIGTERMException

from site_node.pggan.module import PGGANModule
from site_node.pggan.sampling import image_grid, latents, to_uint8, write_png

__all__ = ["PGGANProgressBar", "SampleGrids", "TickCheckpoint", "TickReport"]

log = logging.getLogger("radshare.site.train")


class TickCheckpoint(Callback):
    """Replace ``path`` (``checkpoints/last.ckpt``) at every tick end and on an interrupt."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        interrupted = isinstance(exception, KeyboardInterrupt | SIGTERMException)
        # Between steps only (a half-done step is no state), and only on one device, where
        # no other rank waits in a collective.
        if interrupted and not getattr(pl_module, "in_step", True) and trainer.world_size == 1:
            self.save(trainer)
            log.info("interrupted: saved %s", self.path)

    def save(self, trainer: pl.Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the whole state, to resume
        if trainer.is_global_zero:
            os.replace(tmp, self.path)


class SampleGrids(Callback):
    """``samples/fakes_KKKKK.KKKkimg.png``: G_ema on fixed latents every ``every_kimg`` and last.

    Grids are drawn at the current resolution and fade, then nearest-upscaled to the
    target resolution so grids of one run line up.
    """

    def __init__(self, samples_dir: Path, every_kimg: float, num_images: int, seed: int):
        self.samples_dir = Path(samples_dir)
        self.every_nimg = max(1, round(every_kimg * 1000))
        self.num_images = num_images
        self.seed = seed
        self.last_saved_nimg: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"last_saved_nimg": self.last_saved_nimg}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_saved_nimg = state_dict.get("last_saved_nimg")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.last_saved_nimg is None:
            self.save(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, PGGANModule)
        last = self.last_saved_nimg or 0
        if pl_module.cur_nimg // self.every_nimg > last // self.every_nimg or pl_module.finished:
            self.save(trainer, pl_module)

    @torch.no_grad()
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, PGGANModule)
        self.last_saved_nimg = pl_module.cur_nimg
        if not trainer.is_global_zero:
            return
        state, G_ema = pl_module.state, pl_module.G_ema
        z = latents(self.seed + 1, self.num_images, G_ema.z_dim).to(pl_module.device)
        images = G_ema.synthesize(z, state.res_log2, state.alpha).float().clamp(-1, 1)
        scale = G_ema.resolution_px // images.shape[-1]
        images = F.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images
        self.samples_dir.mkdir(parents=True, exist_ok=True)
        name = f"fakes_{pl_module.cur_nimg / 1000:09.3f}kimg.png"
        write_png(self.samples_dir / name, image_grid(to_uint8(images)))


class TickReport(Callback):
    """One log line per tick (stylegan's ``tick … kimg … sec/tick``) and images/s to the loggers."""

    def __init__(self) -> None:
        self.tick = 0
        self._start_time = 0.0
        self._start_nimg = 0

    def state_dict(self) -> dict[str, Any]:
        return {"tick": self.tick}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tick = int(state_dict.get("tick", 0))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, PGGANModule)
        self._start_time, self._start_nimg = time.perf_counter(), pl_module.cur_nimg

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, PGGANModule)
        seconds = max(time.perf_counter() - self._start_time, 1e-9)
        images_per_s = (pl_module.cur_nimg - self._start_nimg) / seconds
        self.tick += 1
        pl_module.log(
            "timing/images_per_s", images_per_s, on_epoch=True, on_step=False, rank_zero_only=True
        )
        metrics = trainer.callback_metrics
        log.info(
            "tick %d  kimg %.1f  %s  alpha %.3f  loss_D %.4f  loss_G %.4f  augment_p %.3f  "
            "sec/tick %.1f  img/s %.1f",
            self.tick,
            pl_module.cur_nimg / 1000,
            pl_module.state.describe(),
            pl_module.state.alpha,
            float(metrics.get("loss/D_loss", float("nan"))),
            float(metrics.get("loss/G", float("nan"))),
            pl_module.augment_p,
            seconds,
            images_per_s,
        )


class PGGANProgressBar(TQDMProgressBar):
    """Lightning's bar with phase, resolution, alpha, kimg and images/s."""

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self._last: tuple[float, int] | None = None
        self._images_per_s = 0.0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        assert isinstance(pl_module, PGGANModule)
        now = time.perf_counter()
        if self._last is not None and now > self._last[0]:
            rate = (pl_module.cur_nimg - self._last[1]) / (now - self._last[0])
            self._images_per_s = (
                0.9 * self._images_per_s + 0.1 * rate if self._images_per_s else rate
            )
        self._last = (now, pl_module.cur_nimg)
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        assert isinstance(pl_module, PGGANModule)
        state = pl_module.state
        return {
            "phase": state.describe(),
            "alpha": f"{state.alpha:.2f}",
            "kimg": f"{pl_module.cur_nimg / 1000:.1f}",
            "img/s": f"{self._images_per_s:.0f}",
            "p": f"{pl_module.augment_p:.2f}",
            **_privacy_metrics(pl_module),
        }


def _privacy_metrics(pl_module: PGGANModule) -> dict[str, str]:
    """ε spent so far under DP-SGD (``site_node.privacy.dp_module``); nothing without DP."""
    epsilon = getattr(pl_module, "epsilon_so_far", None)
    return {} if epsilon is None else {"ε": f"{epsilon:.2f}"}
