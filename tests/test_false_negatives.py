"""Queues without false negatives: ids travel with the keys, and the queue loss does not
count a query's own image or identical caption among the queued keys as a negative."""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch

from wenlan_cli.config import TrainConfig
from wenlan_cli.data.pipeline import ImageSettings, PairCollator, PairDataset, stable_id
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.data.sources import load_records
from wenlan_cli.models import create_model, get_model_config
from wenlan_cli.models.loss import brivl_loss, false_negatives, queue_infonce
from wenlan_cli.models.queue import NO_ID, FeatureQueue
from wenlan_cli.engine import checkpoint as ckpt
from wenlan_cli.train.loop import Pretrainer, apply_overrides


def test_the_mask_marks_the_same_image_or_the_same_caption_and_never_no_id():
    query = torch.tensor([[10, 100], [20, 200], [NO_ID, NO_ID]])
    queue = torch.tensor([[10, 555], [30, 200], [NO_ID, NO_ID], [40, 400], [20, 100]])
    mask = false_negatives(query, queue)
    assert mask.tolist() == [
        [True, False, False, False, True],  # own image (slot 0); slot 4 has its caption
        [False, True, False, False, True],  # slot 1 has its caption; slot 4 is its image
        [False, False, False, False, False],  # a query without ids masks nothing
    ]


def test_masked_queue_loss_matches_a_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]], requires_grad=True)
    exclude = torch.tensor([[True, False, False], [False, False, False]])
    t = 0.5
    # Row 0's logits [0.6, 1, -1, 0] / 0.5 lose the masked 1 (its own image in the queue);
    # row 1 keeps all of [1, 0, 0, -1] / 0.5.
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(-2) + math.exp(0))
    row1 = -2.0 + math.log(math.exp(2) + 1 + 1 + math.exp(-2))
    loss = queue_infonce(q, k, queue, t, exclude)
    assert loss.item() == pytest.approx((row0 + row1) / 2, abs=1e-6)
    loss.backward()
    assert torch.isfinite(q.grad).all()
    # Slot 0 gets a gradient from query 1 only (p = its softmax weight, times q1 / t, over
    # the 2 rows): nothing along query 0's direction, which masked it.
    p1 = 1 / (math.exp(2) + 2 + math.exp(-2))
    assert queue.grad[0].tolist() == pytest.approx([0.0, p1], abs=1e-6)
    total = brivl_loss(q, q, k, k, queue, queue, t, image_queue_exclude=exclude, text_queue_exclude=exclude)
    assert total.item() == pytest.approx(row0 + row1, abs=1e-6)


def test_a_fully_masked_queue_leaves_only_the_positive():
    q = torch.tensor([[1.0, 0.0]])
    loss = queue_infonce(q, q, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.1, torch.tensor([[True, True]]))
    assert loss.item() == 0.0


def test_the_queue_keeps_ids_with_its_keys_and_wraps():
    queue = FeatureQueue(size=5, dim=2)
    assert (queue.ids == NO_ID).all()
    keys = torch.arange(14, dtype=torch.float32).view(7, 2)
    ids = torch.arange(14).view(7, 2)
    queue.enqueue(keys[:3], ids[:3])
    queue.enqueue(keys[3:7], ids[3:7])  # two at the end, two wrapped to the front
    assert queue.ids.tolist() == [ids[5].tolist(), ids[6].tolist(), ids[2].tolist(), ids[3].tolist(), ids[4].tolist()]
    queue.enqueue(keys[:1])  # keys without ids: "no id"
    assert queue.ids[2].tolist() == [NO_ID, NO_ID]


def test_a_queue_saved_without_ids_loads_with_no_ids():
    old = FeatureQueue(size=4, dim=2)
    state = {k: v for k, v in old.state_dict().items() if k != "ids"}
    new = FeatureQueue(size=4, dim=2)
    new.ids.fill_(7)
    new.load_state_dict(state)  # strict: nothing reported missing
    assert torch.equal(new.features, old.features) and (new.ids == NO_ID).all()


def small_model(mask: bool):
    config = get_model_config("brivl-tiny")
    config = dataclasses.replace(config, image=dataclasses.replace(config.image, image_size=64), queue_size=8, mask_false_negatives=mask)
    torch.manual_seed(0)
    return create_model(config, vocab_size=40).eval()


def id_batch(image_ids, caption_hashes):
    g = torch.Generator().manual_seed(0)
    b = len(image_ids)
    return {
        "images": torch.randn(b, 3, 64, 64, generator=g),
        "boxes": torch.tensor([0.0, 0.0, 64.0, 64.0]).repeat(b, 10, 1),
        "box_mask": torch.ones(b, 10, dtype=torch.bool),
        "input_ids": torch.randint(5, 40, (b, 7), generator=g),
        "attention_mask": torch.ones(b, 7, dtype=torch.long),
        "image_ids": torch.tensor(image_ids),
        "caption_hashes": torch.tensor(caption_hashes),
    }


@pytest.mark.parametrize("mask", [True, False])
def test_the_model_masks_its_queues_with_the_batch_ids_when_switched_on(mask, monkeypatch):
    from wenlan_cli.models import brivl

    model = small_model(mask)
    queued = torch.tensor([[1, 11], [2, 22], [3, 33], [4, 44], [5, 55], [6, 66], [NO_ID, NO_ID], [8, 11]])
    model.enqueue(torch.nn.functional.normalize(torch.randn(8, 256), dim=1), torch.randn(8, 256), queued)
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return brivl_loss(*args, **kwargs)

    monkeypatch.setattr(brivl, "brivl_loss", spy)
    out = model(id_batch([2, 9], [99, 11]))
    assert out.key_ids.tolist() == [[2, 99], [9, 11]]
    if not mask:
        assert seen == {}
        return
    expected = [[False, True, False, False, False, False, False, False], [True, False, False, False, False, False, False, True]]
    assert seen["image_queue_exclude"].tolist() == expected
    assert seen["text_queue_exclude"].tolist() == expected
    # The model's loss is exactly the masked loss of its own embeddings.
    with torch.no_grad():
        batch = id_batch([2, 9], [99, 11])
        iq = model.encode_image(batch["images"], batch["boxes"], batch["box_mask"])
        tq = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert out.loss.item() == pytest.approx(
        brivl_loss(iq, tq, iq, tq, model.image_queue.features, model.text_queue.features, model.config.temperature,
                   image_queue_exclude=torch.tensor(expected), text_queue_exclude=torch.tensor(expected)).item(),
        rel=1e-5,
    )


def test_pairs_carry_their_image_id_and_caption_hash(tmp_path):
    from PIL import Image

    path = tmp_path / "a.jpg"
    Image.new("RGB", (32, 32), (200, 0, 0)).save(path)
    records = [ImageTextRecord("a", path, ["红色方块", "一个红色的方块"]), ImageTextRecord("b", path, ["红色方块"])]
    settings = ImageSettings(image_size=32, max_regions=2, grid_size=1, mean=(0.5,) * 3, std=(0.5,) * 3)
    dataset = PairDataset(records, [[[2, 5, 3], [2, 6, 3]], [[2, 5, 3]]], settings)
    batch = PairCollator(2)([dataset[(0, 0)], dataset[(0, 1)], dataset[(1, 0)]])
    assert batch["image_ids"].dtype == torch.long and batch["caption_hashes"].dtype == torch.long
    a, b = stable_id("a"), stable_id("b")
    assert batch["image_ids"].tolist() == [a, a, b] and a != b and min(a, b) >= 0
    hashes = batch["caption_hashes"].tolist()
    assert hashes[0] == hashes[2] != hashes[1]  # the same words, whichever image they describe


def test_the_option_reaches_the_model_config():
    cfg = TrainConfig(mask_false_negatives=False)
    assert apply_overrides(get_model_config("brivl-tiny"), cfg).mask_false_negatives is False
    cfg = TrainConfig(mask_false_negatives=True)
    assert apply_overrides(get_model_config("brivl-tiny"), cfg).mask_false_negatives is True
    assert apply_overrides(get_model_config("brivl-tiny"), TrainConfig()).mask_false_negatives is False  # no gain measured


def test_training_masks_the_images_that_come_back_and_queues_their_ids(synth_dir, tmp_path, tiny_config, monkeypatch):
    """96 images, batch 16, queue 64: from step 7 (the second epoch) queued keys include
    the query's own image, with another caption; those are the entries masked."""
    from wenlan_cli.models import brivl

    masked = []

    def counting(query_ids, queue_ids):
        mask = false_negatives(query_ids, queue_ids)
        masked.append(int(mask.sum()))
        return mask

    monkeypatch.setattr(brivl, "false_negatives", counting)
    out = tmp_path / "run"
    result = Pretrainer(tiny_config(out, synth_dir, steps=10, queue_warmup=0, mask_false_negatives=True)).run()
    assert result.step == 10 and math.isfinite(result.metrics["mean_recall"])
    per_step = masked[::2]  # image queue, text queue: the same ids
    assert per_step[:6] == [0] * 6 and sum(per_step[6:]) > 0

    rest = ckpt.load_training_state(result.checkpoint)["model_rest"]
    train_ids = {stable_id(r.image_id) for r in load_records("synth", str(synth_dir), "train")}
    for name in ("image_queue", "text_queue"):
        ids = rest[f"{name}.ids"]
        assert ids.shape == (64, 2) and set(ids[:, 0].tolist()) <= train_ids
    assert torch.equal(rest["image_queue.ids"], rest["text_queue.ids"])


def test_a_checkpoint_from_before_queue_ids_resumes(synth_dir, tmp_path, tiny_config):
    """Older checkpoints hold no ids: they resume with every queued key's id unknown."""
    out = tmp_path / "run"
    first = Pretrainer(tiny_config(out, synth_dir, steps=4, save_every=2, queue_warmup=0)).run()
    step_dir = out / ckpt.step_name(2)
    path = step_dir / "training_state.pt"
    state = torch.load(path, weights_only=True)
    state["model_rest"] = {k: v for k, v in state["model_rest"].items() if not k.endswith(".ids")}
    shutil.rmtree(out / "final")
    torch.save(state, path)
    resumed = Pretrainer(tiny_config(out, synth_dir, steps=4, queue_warmup=0, resume=str(step_dir))).run()
    assert first.step == resumed.step == 4 and math.isfinite(resumed.metrics["mean_recall"])
