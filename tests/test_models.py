"""The BriVL model pieces: towers, region pooling, queues, losses, momentum, freezing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from wenlan_cli.errors import UsageError
from wenlan_cli.models import create_model, get_model_config, list_models
from wenlan_cli.models.layers import masked_mean
from wenlan_cli.models.loss import brivl_loss, clip_loss, queue_infonce
from wenlan_cli.models.queue import FeatureQueue


def small_config(**changes):
    config = get_model_config("brivl-tiny")
    image = dataclasses.replace(config.image, image_size=64)
    return dataclasses.replace(config, image=image, queue_size=32, **changes)


def make_batch(config, batch=4, length=9, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = config.image.image_size
    r = config.image.max_regions
    boxes = torch.tensor([0.0, 0.0, s, s]).repeat(batch, r, 1)
    boxes[:, 1] = torch.tensor([4.0, 4.0, 30.0, 30.0])
    mask = torch.zeros(batch, r, dtype=torch.bool)
    mask[:, :2] = True
    return {
        "images": torch.randn(batch, 3, s, s, generator=g),
        "boxes": boxes,
        "box_mask": mask,
        "input_ids": torch.randint(5, vocab, (batch, length), generator=g),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }


def test_registry_lists_the_three_architectures():
    assert {"brivl-tiny", "brivl-base", "brivl-large"} <= set(list_models())
    base = get_model_config("brivl-base")
    assert (base.embed_dim, base.queue_size, base.momentum, base.temperature) == (2048, 9600, 0.99, 0.07)
    assert base.image.max_regions == 37 and base.image.image_size == 380
    assert base.text.hf_name == "hfl/chinese-roberta-wwm-ext" and base.text.max_length == 80
    assert base.image.trainable_blocks == 4 and base.text.trainable_layers == 4
    tiny = get_model_config("brivl-tiny")
    assert tiny.image.image_size <= 128 and tiny.embed_dim == 256 and tiny.queue_size >= 4096
    assert 2 <= tiny.text.bert_config["num_hidden_layers"] <= 4


def test_unknown_model_and_bad_config_keys_are_named(tmp_path):
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        get_model_config("nope")
    bad = tmp_path / "m.json"
    bad.write_text('{"name": "x", "image": {"backbone": "test_resnet", "colour": 1}}')
    with pytest.raises(UsageError, match=r"image.*unknown key 'colour'"):
        get_model_config(bad)
    bad.write_text('{"queue_size": "many"}')
    with pytest.raises(UsageError, match="queue_size must be an integer"):
        get_model_config(bad)


def test_forward_backward_moco_gives_finite_loss_and_gradients():
    config = small_config()
    torch.manual_seed(0)
    model = create_model(config, vocab_size=50)
    batch = make_batch(config)
    model.momentum_update()
    out = model(batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # Two InfoNCE terms over 1 + K classes start near 2 * log(1 + K).
    assert abs(out.loss.item() - 2 * math.log(1 + config.queue_size)) < 1.5
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("image_encoder_m", "text_encoder_m")))
    assert out.image_keys.shape == (4, config.embed_dim)
    assert torch.allclose(out.image_keys.norm(dim=1), torch.ones(4), atol=1e-5)


def test_clip_loss_model_has_no_momentum_towers_or_queues():
    config = small_config(loss="clip")
    model = create_model(config, vocab_size=50)
    assert not hasattr(model, "image_queue") and not hasattr(model, "image_encoder_m")
    out = model(make_batch(config))
    assert out.image_keys is None and torch.isfinite(out.loss)


def test_embeddings_are_unit_vectors_and_padding_regions_do_not_matter():
    config = small_config()
    model = create_model(config, vocab_size=50, for_training=False).eval()
    batch = make_batch(config)
    emb = model.encode_image(batch["images"], batch["boxes"], batch["box_mask"])
    assert emb.dtype == torch.float32 and torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    moved = batch["boxes"].clone()
    moved[:, 2:] = torch.tensor([10.0, 10.0, 50.0, 60.0])  # only masked-out rows change
    emb2 = model.encode_image(batch["images"], moved, batch["box_mask"])
    assert torch.allclose(emb, emb2, atol=1e-5)
    text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(text.norm(dim=1), torch.ones(4), atol=1e-5)


def test_region_pooling_is_the_mean_of_a_grid_of_bilinear_samples():
    config = small_config()
    model = create_model(config, vocab_size=50, for_training=False)
    encoder = model.image_encoder
    features = torch.randn(1, 3, 8, 8)
    image_size = 64  # stride 8
    box = torch.tensor([[[8.0, 16.0, 40.0, 48.0]]])
    pooled = encoder.pool_regions(features, box, image_size)[0, 0]
    # The same 4 x 4 sample points by hand, with grid_sample (align_corners=False).
    p = config.image.pool_size
    xs = 8.0 + (torch.arange(p) + 0.5) * (32.0 / p)
    ys = 16.0 + (torch.arange(p) + 0.5) * (32.0 / p)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx / image_size * 2 - 1, gy / image_size * 2 - 1], dim=-1)[None]
    samples = F.grid_sample(features, grid, mode="bilinear", align_corners=False)
    assert torch.allclose(pooled, samples.mean(dim=(2, 3))[0], atol=1e-5)


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_mean(x, mask).item() == 2.0


def test_queue_wraps_around_and_keeps_the_newest_keys():
    queue = FeatureQueue(size=5, dim=2)
    keys = torch.arange(14, dtype=torch.float32).view(7, 2)
    queue.enqueue(keys[:3])
    assert int(queue.pointer) == 3
    queue.enqueue(keys[3:7])  # 4 keys: two at the end, two wrapped to the front
    assert int(queue.pointer) == 2
    assert torch.equal(queue.features[3:5], keys[3:5])
    assert torch.equal(queue.features[0:2], keys[5:7])
    assert torch.equal(queue.features[2], keys[2])


def test_queue_infonce_matches_a_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    t = 0.5
    # Row 0: logits [0.6, 1, -1, 0] / 0.5; row 1: [1, 0, 0, -1] / 0.5.
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(2) + math.exp(-2) + math.exp(0))
    row1 = -2.0 + math.log(math.exp(2) + 1 + 1 + math.exp(-2))
    expected = (row0 + row1) / 2
    assert queue_infonce(q, k, queue, t).item() == pytest.approx(expected, abs=1e-6)
    # BriVL's loss is the sum of both directions.
    total = brivl_loss(q, q, k, k, queue, queue, t)
    assert total.item() == pytest.approx(2 * expected, abs=1e-6)


def test_clip_loss_matches_a_hand_computation():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 1.0
    # logits = identity; each row: -1 + log(e + 1)
    per_row = -1 + math.log(math.e + 1)
    assert clip_loss(a, a, t).item() == pytest.approx(per_row, abs=1e-6)


def test_momentum_update_moves_keys_towards_queries():
    config = small_config(momentum=0.9)
    model = create_model(config, vocab_size=50)
    q = next(model.image_encoder.head.mlp.parameters())
    k = next(model.image_encoder_m.head.mlp.parameters())
    assert torch.equal(q, k)  # the copies start equal
    with torch.no_grad():
        q.add_(1.0)
    before = k.detach().clone()
    model.momentum_update()
    assert torch.allclose(k, 0.9 * before + 0.1 * q.detach(), atol=1e-6)


def test_training_only_the_top_blocks_freezes_the_rest():
    config = small_config()
    image = dataclasses.replace(config.image, trainable_blocks=2)
    bert = dict(config.text.bert_config, num_hidden_layers=3)
    text = dataclasses.replace(config.text, trainable_layers=1, bert_config=bert)
    model = create_model(dataclasses.replace(config, image=image, text=text), vocab_size=50, for_training=False)
    blocks = list(model.image_encoder.backbone.blocks)
    assert all(not p.requires_grad for b in blocks[:-2] for p in b.parameters())
    assert all(p.requires_grad for b in blocks[-2:] for p in b.parameters())
    assert not any(p.requires_grad for p in model.image_encoder.backbone.conv_stem.parameters())
    assert all(p.requires_grad for p in model.image_encoder.backbone.conv_head.parameters())
    layers = model.text_encoder.language_model.encoder.layer
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    assert not any(p.requires_grad for p in model.text_encoder.language_model.embeddings.parameters())
    # The heads on top always train.
    assert all(p.requires_grad for p in model.image_encoder.head.parameters())


def test_queue_warmup_step_takes_the_in_batch_loss_and_still_returns_keys():
    config = small_config()
    torch.manual_seed(0)
    model = create_model(config, vocab_size=50)
    batch = make_batch(config)
    model.momentum_update()
    out = model(batch, in_batch=True)
    image = F.normalize(model.image_encoder(batch["images"], batch["boxes"], batch["box_mask"]), dim=-1)
    text = F.normalize(model.text_encoder(batch["input_ids"], batch["attention_mask"]), dim=-1)
    assert torch.allclose(out.loss, 2 * clip_loss(image, text, config.temperature), atol=1e-6)
    assert out.image_keys.shape == out.text_keys.shape == (4, config.embed_dim)
    assert not torch.allclose(model(batch).loss, out.loss)


def test_batchnorm_backbones_are_recognised_for_shuffle_bn():
    import timm

    from wenlan_cli.train.loop import has_batchnorm

    model = create_model(small_config(), vocab_size=50)
    assert has_batchnorm(model.image_encoder)  # test_efficientnet: timm's BatchNormAct2d, a BatchNorm2d
    assert not has_batchnorm(model.text_encoder)  # LayerNorm only
    assert has_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.SyncBatchNorm(4)))
    assert not has_batchnorm(timm.create_model("test_vit", num_classes=0))
