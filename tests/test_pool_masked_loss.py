"""Show 2: a label a site never annotated contributes no gradient from that site's images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hub.pooling.module import PooledClassifierModule
from shared.masked_loss import masked_class_weights, masked_weighted_bce_with_logits
from shared.networks.labeller import LabellerConfig

SPACE = ("Cardiomegaly", "Effusion", "Pneumonia", "No Finding")
MASK_A = [1, 1, 1, 1]
MASK_B = [0, 0, 1, 1]  # site b annotated only Pneumonia and No Finding
CFG = LabellerConfig(
    resolution_px=32, class_names=SPACE, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)
)


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (8, 1, 32, 32), dtype=np.uint8))
    labels = torch.from_numpy((rng.random((8, 4)) < 0.4).astype(np.float32))
    mask = torch.tensor([MASK_A] * 4 + [MASK_B] * 4, dtype=torch.float32)
    return images, labels * mask, mask


def _module(labels, mask):
    torch.manual_seed(0)
    w_pos, w_neg = masked_class_weights(labels.numpy(), mask.numpy())
    return PooledClassifierModule(CFG, w_pos, w_neg, use_augmentation=False).train()


def _grads(module, images, labels, mask):
    module.zero_grad()
    loss, _ = module.loss(images, labels, mask, train=False)
    loss.backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def test_loss_matches_numpy_reference():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 4))
    labels = (rng.random((6, 4)) < 0.5).astype(float)
    mask = (rng.random((6, 4)) < 0.7).astype(float)
    w_pos, w_neg = masked_class_weights(labels, mask)
    p = 1 / (1 + np.exp(-logits))
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    weight = np.where(labels > 0, w_pos.numpy(), w_neg.numpy())
    expected = (mask * weight * bce).sum() / mask.sum()
    got = masked_weighted_bce_with_logits(
        torch.tensor(logits),
        torch.tensor(labels),
        torch.tensor(mask),
        w_pos.double(),
        w_neg.double(),
    )
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # Class weights count only annotated entries.
    annotated, positives = mask.sum(0), (labels * mask).sum(0)
    np.testing.assert_allclose(w_pos.numpy(), annotated / np.maximum(positives, 1), rtol=1e-6)


def test_masked_logits_get_exactly_zero_gradient():
    images, labels, mask = _batch()
    module = _module(labels, mask)
    logits = module(images.float() / 127.5 - 1).detach().requires_grad_(True)
    loss = masked_weighted_bce_with_logits(logits, labels, mask, module.w_pos, module.w_neg)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.count_nonzero(grad[mask == 0]) == 0
    assert torch.count_nonzero(grad[mask == 1]) == int(mask.sum())


def test_site_b_images_give_no_gradient_to_labels_it_never_annotated():
    images, labels, mask = _batch()
    module = _module(labels, mask)
    # Only site b's images: the output rows of Cardiomegaly and Effusion get no gradient at all.
    grads_b = _grads(module, images[4:], labels[4:], mask[4:])
    out_w, out_b = (
        grads_b["classifier.net.class_layers.out.weight"],
        grads_b["classifier.net.class_layers.out.bias"],
    )
    assert torch.count_nonzero(out_w[:2]) == 0 and torch.count_nonzero(out_b[:2]) == 0
    assert torch.count_nonzero(out_w[2:]) > 0
    # Whatever site b's masked labels say, every parameter's gradient is the same.
    flipped = labels.clone()
    flipped[4:, :2] = 1.0
    grads = _grads(module, images, labels, mask)
    grads_flipped = _grads(module, images, flipped, mask)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_flipped[name], rtol=0, atol=0)
    # Unmasking them (treating "unknown" as "negative") would change the gradient.
    grads_unmasked = _grads(module, images, labels, torch.ones_like(mask))
    assert not torch.equal(
        grads["classifier.net.class_layers.out.weight"],
        grads_unmasked["classifier.net.class_layers.out.weight"],
    )
