"""DP-SGD for the labeller through Opacus's standard path: GroupNorm, exact hooks, the budget."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.networks.labeller import Labeller, LabellerConfig
from site_node.labeller.module import LabellerModule
from site_node.privacy.config import DPOptions
from site_node.privacy.dp_labeller import DPLabellerCallback, dp_compatible

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = LabellerConfig(
    resolution_px=64, class_names=("Effusion", "No Finding"), init_features=8, growth_rate=4,
    block_config=(1, 1, 1, 1),
)  # fmt: skip


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 64, 64), generator=g, dtype=torch.uint8)
    labels = (torch.rand(n, 2, generator=g) < 0.3).float()
    return TensorDataset(images, labels)


def test_batchnorm_becomes_groupnorm() -> None:
    torch.manual_seed(0)
    labeller = dp_compatible(Labeller(CFG))
    kinds = {type(m) for m in labeller.modules()}
    assert nn.GroupNorm in kinds and not any(
        issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds
    )


def test_hook_per_sample_grads_match_a_per_example_loop() -> None:
    torch.manual_seed(0)
    labeller = dp_compatible(Labeller(CFG))
    x = torch.rand(5, 1, 64, 64) * 2 - 1
    y = (torch.rand(5, 2) < 0.5).float()
    optimizer = torch.optim.SGD(labeller.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    PrivacyEngine().make_private(
        module=labeller, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0,
        max_grad_norm=1.0, grad_sample_mode="hooks", wrap_model=False,
    )  # fmt: skip
    nn.functional.binary_cross_entropy_with_logits(labeller(x), y).backward()
    per_sample = {n: p.grad_sample.clone() for n, p in labeller.named_parameters()}  # type: ignore[union-attr]
    for i in range(5):
        labeller.zero_grad(set_to_none=True)
        for p in labeller.parameters():
            p.grad_sample = None  # type: ignore[attr-defined]
        one = slice(i, i + 1)
        nn.functional.binary_cross_entropy_with_logits(labeller(x[one]), y[one]).backward()
        for name, p in labeller.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-4, atol=1e-5)


def test_lightning_run_spends_the_target_epsilon(tmp_path) -> None:
    torch.manual_seed(0)
    module = LabellerModule(CFG, torch.ones(2), torch.ones(2), augment={})
    module.labeller = dp_compatible(module.labeller)
    before = [p.detach().clone() for p in module.labeller.parameters()]
    train = DataLoader(_data(96, 1), batch_size=16)
    epochs, dp = 2, DPOptions(target_epsilon=2.0, accountant="rdp")
    callback = DPLabellerCallback(dp, train, epochs=epochs)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, callback.data_loader, DataLoader(_data(32, 2), batch_size=32))

    parameters = callback.dp_parameters()
    accountant = create_accountant(mechanism="rdp")
    accountant.history = [(parameters.noise_multiplier, 1 / len(train), epochs * len(train))]
    assert parameters.epsilon == pytest.approx(accountant.get_epsilon(delta=dp.delta), rel=1e-12)
    assert 2.0 - 0.02 <= parameters.epsilon <= 2.0
    assert parameters.max_grad_norm == 1.0 and parameters.delta == dp.delta
    assert [(s.sample_rate, s.steps) for s in parameters.segments] == [(1 / len(train), 12)]
    changed = [
        not torch.equal(b, p) for b, p in zip(before, module.labeller.parameters(), strict=True)
    ]
    assert all(changed)  # every parameter stepped (noise reaches all of them)
