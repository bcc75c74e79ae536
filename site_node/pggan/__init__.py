"""PGGAN training at a site (Karras et al. 2018, as Segal et al. and Han et al. used it).

The critic, the WGAN-GP losses, the progressive schedule, the LightningModule, the linear
training procedure, the export of G_ema and sampling. Everything here stays at the site;
only ``export/`` (G_ema weights + JSON) is read by publishing. Training itself is
``site_node.pggan.train.train(TrainOptions)`` (imported from there: it pulls in Lightning).
"""

from site_node.pggan.discriminator import Discriminator, DiscriminatorConfig
from site_node.pggan.export import GeneratorExport, export_generator, load_exported_generator
from site_node.pggan.losses import critic_loss, generator_loss, gradient_penalty
from site_node.pggan.options import PROFILES, TrainOptions
from site_node.pggan.schedule import DEFAULT_BATCH_SIZES, ProgressSchedule, build_phases

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "PROFILES",
    "Discriminator",
    "DiscriminatorConfig",
    "GeneratorExport",
    "ProgressSchedule",
    "TrainOptions",
    "build_phases",
    "critic_loss",
    "export_generator",
    "generator_loss",
    "gradient_penalty",
    "load_exported_generator",
]
