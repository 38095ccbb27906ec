"""Chunked retrieval metrics against a brute-force reference (full matrix + stable sort)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from rich.console import Console

from wenlan_cli.eval.retrieval import (
    format_recall_table,
    recall_at_k,
    retrieval_metrics,
    retrieval_ranks,
)

# ----------------------------------------------------------------------------- helpers


def reference_ranks(images: torch.Tensor, texts: torch.Tensor, text_to_image: torch.Tensor):
    """Brute force: the whole score matrix, a stable descending sort per query."""
    scores = images.float() @ texts.float().T  # (N, M)
    n, m = scores.shape
    # text -> image: where does the gold image land in each caption's sorted list?
    order = torch.sort(scores.T, dim=1, descending=True, stable=True).indices  # (M, N)
    t2i = (order == text_to_image[:, None]).int().argmax(1)
    # image -> text: the first position holding any of the image's captions.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (N, M)
    is_gold = text_to_image[order] == torch.arange(n)[:, None]
    i2t = torch.where(is_gold.any(1), is_gold.int().argmax(1), torch.tensor(-1))
    return t2i.long(), i2t.long()


def quantised_problem(seed: int, n_images: int = 23, dim: int = 6, max_captions: int = 4):
    """Small-integer embeddings: every dot product is exact in float32 and ties abound.

    Captions per image vary from 0 to ``max_captions``; image 0 always has none and the
    captions are shuffled so an image's captions are not contiguous.
    """
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_captions + 1, (n_images,), generator=g)
    counts[0] = 0
    counts[1] = max(int(counts[1]), 1)
    text_to_image = torch.repeat_interleave(torch.arange(n_images), counts)
    text_to_image = text_to_image[torch.randperm(len(text_to_image), generator=g)]
    images = torch.randint(-2, 3, (n_images, dim), generator=g).float()
    texts = torch.randint(-2, 3, (len(text_to_image), dim), generator=g).float()
    # A few exact duplicates on both sides, as real data has (same photo, same caption).
    images[5] = images[3]
    texts[-1] = texts[0]
    return images, texts, text_to_image


# A tiny example worked out by hand (see the comments for each rank).
HAND_IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
HAND_TEXTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 2.0], [0.0, -1.0]])
HAND_GOLD = torch.tensor([2, 1, 0, 0])  # image 3 has no caption
# text->image: t0 scores [1,0,1,-1], gold i2 ties with i0 which comes first -> 1
#              t1 scores [0,1,0,0] -> 0;  t2 scores [1,2,1,-1], gold i0 behind i1 -> 1
#              t3 scores [0,-1,0,0], gold i0 ties with i2, i3 but has the lowest index -> 0
HAND_T2I = [1, 0, 1, 0]
# image->text: i0 scores [1,0,1,0], captions t2 (1) and t3 (0): best t2, behind t0 -> 1
#              i1 scores [0,1,2,-1], caption t1 behind t2 -> 1
#              i2 scores [1,0,1,0], caption t0 first -> 0;  i3 has no caption -> -1
HAND_I2T = [1, 1, 0, -1]


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties(seed):
    images, texts, gold = quantised_problem(seed)
    scores = images @ texts.T
    assert scores.unique().numel() < scores.numel() // 5  # really full of ties
    expected = reference_ranks(images, texts, gold)
    t2i, i2t = retrieval_ranks(images, texts, gold, chunk_size=4)
    assert torch.equal(t2i, expected[0])
    assert torch.equal(i2t, expected[1])
    assert i2t[0] == -1


def test_matches_brute_force_on_normalised_random_embeddings():
    g = torch.Generator().manual_seed(7)
    images = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    gold = torch.randint(0, 40, (120,), generator=g)
    # Captions near their image, so recall is far from zero.
    texts = torch.nn.functional.normalize(images[gold] + 0.8 * torch.randn(120, 16, generator=g), dim=1)
    expected = reference_ranks(images, texts, gold)
    t2i, i2t = retrieval_ranks(images, texts, gold, chunk_size=16)
    assert torch.equal(t2i, expected[0])
    assert torch.equal(i2t, expected[1])
    assert 0 < (t2i == 0).float().mean() < 1


def test_chunk_sizes_agree():
    images, texts, gold = quantised_problem(3, n_images=17)
    n, m = len(images), len(texts)
    results = [retrieval_ranks(images, texts, gold, chunk_size=c) for c in (1, 3, n, m, max(n, m) + 5)]
    for t2i, i2t in results[1:]:
        assert torch.equal(t2i, results[0][0])
        assert torch.equal(i2t, results[0][1])
    assert torch.equal(results[0][0], reference_ranks(images, texts, gold)[0])


def test_hand_computed_example():
    ref_t2i, ref_i2t = reference_ranks(HAND_IMAGES, HAND_TEXTS, HAND_GOLD)  # the reference itself
    assert ref_t2i.tolist() == HAND_T2I and ref_i2t.tolist() == HAND_I2T
    t2i, i2t = retrieval_ranks(HAND_IMAGES, HAND_TEXTS, HAND_GOLD, chunk_size=3)
    assert t2i.tolist() == HAND_T2I
    assert i2t.tolist() == HAND_I2T

    m = retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_GOLD, ks=(1, 2, 5))
    assert m["t2i_r1"] == 50.0 and m["t2i_r2"] == 100.0 and m["t2i_r5"] == 100.0
    assert m["i2t_r1"] == pytest.approx(100 / 3) and m["i2t_r2"] == 100.0
    assert m["mean_recall"] == pytest.approx((100 / 3 + 100 + 100 + 50 + 100 + 100) / 6)
    assert m["i2t_median_rank"] == 2.0  # 1-based median of ranks [1, 1, 0]
    assert m["t2i_median_rank"] == 1.0  # floor(median([1, 0, 1, 0]) = 0.5) + 1
    assert m["num_images"] == 4 and m["num_texts"] == 4


def test_every_caption_of_an_image_counts():
    # Image 0 has captions t1, t2, t3; its best-scoring one (t2) is not its first.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [0.9, 0.1]])
    gold = torch.tensor([1, 0, 0, 0])
    _, i2t = retrieval_ranks(images, texts, gold)
    # image 0 scores [0, 0, 1, 0.9]: t2 comes first; image 1 scores [1, 2, 0, 0.1]: t1 is ahead of t0
    assert i2t.tolist() == [0, 1]


# ----------------------------------------------------------------------------- inputs


def test_numpy_inputs_match_torch():
    images, texts, gold = quantised_problem(4)
    expected = retrieval_ranks(images, texts, gold)
    for dtype in (np.float32, np.float64):
        got = retrieval_ranks(images.numpy().astype(dtype), texts.numpy().astype(dtype), gold.numpy())
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    # Non-contiguous numpy views and int32 / list gold indices are fine too.
    wide = np.zeros((len(texts), 2 * texts.shape[1]), dtype=np.float32)
    wide[:, ::2] = texts.numpy()
    got = retrieval_ranks(
        np.asfortranarray(images.numpy()), wide[:, ::2], gold.numpy().astype(np.int32).tolist()
    )
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    metrics = retrieval_metrics(images.numpy(), texts.numpy(), gold.numpy())
    assert metrics == retrieval_metrics(images, texts, gold)


def test_inputs_are_left_untouched_and_may_require_grad():
    images, texts, gold = quantised_problem(9)
    images.requires_grad_(True)
    before = (images.detach().clone(), texts.clone(), gold.clone())
    t2i, i2t = retrieval_ranks(images, texts, gold, chunk_size=2)
    assert not t2i.requires_grad and not i2t.requires_grad
    assert torch.equal(images.detach(), before[0]) and torch.equal(texts, before[1])
    assert torch.equal(gold, before[2])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_upcast(dtype):
    images, texts, gold = quantised_problem(5)  # small integers: exact in half precision
    expected = retrieval_ranks(images, texts, gold, chunk_size=5)
    got = retrieval_ranks(images.to(dtype), texts.to(dtype), gold, chunk_size=5)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize(
    ("images", "texts", "gold", "message"),
    [
        (torch.zeros(3, 4), torch.zeros(2, 5), [0, 1], "different embedding sizes"),
        (torch.zeros(3, 4), torch.zeros(2, 4), [0, 3], "outside \\[0, 3\\)"),
        (torch.zeros(3, 4), torch.zeros(2, 4), [-1, 0], "outside"),
        (torch.zeros(3, 4), torch.zeros(2, 4), [0], "one gold image index per caption"),
        (torch.zeros(0, 4), torch.zeros(2, 4), [0, 0], "image_emb is empty"),
        (torch.zeros(3, 4), torch.zeros(0, 4), [], "text_emb is empty"),
        (torch.zeros(3), torch.zeros(2, 3), [0, 1], "must be 2-D"),
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(2, 4), [0, 1], "floating-point"),
        (torch.zeros(3, 4), torch.zeros(2, 4), [0.0, 1.0], "integer image indices"),
        (torch.zeros(3, 4), torch.zeros(2, 4), [[0, 1]], "must be 1-D"),
        (torch.full((3, 4), float("nan")), torch.zeros(2, 4), [0, 1], "NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(images, texts, gold, message):
    with pytest.raises(ValueError, match=message):
        retrieval_ranks(images, texts, gold)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_size(chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        retrieval_ranks(HAND_IMAGES, HAND_TEXTS, HAND_GOLD, chunk_size=chunk_size)


# ----------------------------------------------------------------------------- metrics


def test_recall_at_k_ignores_missing_ranks():
    ranks = torch.tensor([0, -1, 3, 9, 10, -1])
    assert recall_at_k(ranks) == {1: 25.0, 5: 50.0, 10: 75.0}
    assert recall_at_k(np.array([0, 0, 2]), ks=(1, 3)) == {1: pytest.approx(200 / 3), 3: 100.0}
    with pytest.raises(ValueError, match="no valid ranks"):
        recall_at_k(torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match="positive integers"):
        recall_at_k(ranks, ks=(0,))
    with pytest.raises(ValueError, match=">= 0"):
        recall_at_k(torch.tensor([0, -2]))


def test_retrieval_metrics_keys_follow_ks():
    images, texts, gold = quantised_problem(6)
    m = retrieval_metrics(images, texts, gold, ks=(2, 7), chunk_size=3)
    assert list(m) == [
        "i2t_r2", "i2t_r7", "t2i_r2", "t2i_r7", "mean_recall",
        "i2t_median_rank", "t2i_median_rank", "num_images", "num_texts",
    ]  # fmt: skip
    t2i, i2t = reference_ranks(images, texts, gold)
    assert m["t2i_r7"] == pytest.approx(100 * (t2i < 7).float().mean().item())
    valid = i2t[i2t >= 0]
    assert m["i2t_r2"] == pytest.approx(100 * (valid < 2).float().mean().item())
    assert m["i2t_median_rank"] == math.floor(np.median(valid.numpy())) + 1
    assert m["num_images"] == len(images) and m["num_texts"] == len(texts)


def test_format_recall_table():
    metrics = retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_GOLD)
    table = format_recall_table(metrics)
    assert [c.header for c in table.columns] == ["direction", "R@1", "R@5", "R@10", "mean", "MedR"]
    out = io.StringIO()
    Console(file=out, width=120).print(table)
    text = out.getvalue()
    assert "text->image" in text and "image->text" in text
    assert "50.00" in text and "33.33" in text and "80.56" in text
    with pytest.raises(ValueError, match="no recall values"):
        format_recall_table({"num_images": 3})


def test_wide_candidate_sets_count_in_float64(monkeypatch):
    # Beyond 2**24 candidates float32 counts stop being exact; force that path here.
    from wenlan_cli.eval import retrieval

    images, texts, gold = quantised_problem(8)
    expected = reference_ranks(images, texts, gold)
    monkeypatch.setattr(retrieval, "_EXACT_FLOAT32_COUNT", 1)
    t2i, i2t = retrieval_ranks(images, texts, gold, chunk_size=3)
    assert torch.equal(t2i, expected[0]) and torch.equal(i2t, expected[1])


def test_single_image_and_single_caption():
    t2i, i2t = retrieval_ranks(torch.ones(1, 3), torch.ones(1, 3), torch.tensor([0]), chunk_size=1)
    assert t2i.tolist() == [0] and i2t.tolist() == [0]
    t2i, i2t = retrieval_ranks(torch.ones(1, 3), torch.ones(4, 3), torch.zeros(4, dtype=torch.long))
    assert t2i.tolist() == [0, 0, 0, 0] and i2t.tolist() == [0]
