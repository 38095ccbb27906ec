"""One pretrain step against the bare compute of the towers it runs, side by side.

    python benchmarks/train_step.py [--configs tiny,mid] [--batch-size 64] [--rounds 15]
                                    [--device cpu|cuda] [--precision fp32|bf16]

The step is what `wenlan pretrain` does per batch once the batch is in memory: momentum
update, query towers forward, momentum towers forward, the loss against the queues,
backward, gradient clipping, AdamW, enqueue. The bare compute is the query towers'
forward + backward (a sum of their outputs as the loss) plus the momentum towers'
forward, on the same batch. Measurements alternate in short blocks (step, bare, step,
bare, ...) and the fastest block of each kind is compared (`ratio`; background load only
adds time), with the ratio of the medians beside it. Prints one JSON line.
Target: step / bare <= 1.10.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import torch

from wenlan_cli.config import TrainConfig
from wenlan_cli.models.registry import create_model, get_model_config


def mid_config():
    """A mid-size BriVL: 128 px, wider region and text towers, a 4-layer BERT."""
    config = get_model_config("brivl-tiny")
    image = dataclasses.replace(config.image, image_size=128, region_dim=256, encoder_ff_dim=512, mlp_hidden_dim=512)
    bert = dict(config.text.bert_config, hidden_size=256, num_hidden_layers=4, intermediate_size=1024)
    text = dataclasses.replace(config.text, bert_config=bert, encoder_ff_dim=512, mlp_hidden_dim=512)
    return dataclasses.replace(config, name="brivl-mid", image=image, text=text, embed_dim=512)


CONFIGS = {"tiny": lambda: get_model_config("brivl-tiny"), "mid": mid_config}


def make_batch(config, batch_size: int, length: int = 40, vocab: int = 200):
    g = torch.Generator().manual_seed(0)
    s, r = config.image.image_size, config.image.max_regions
    boxes = torch.rand(batch_size, r, 4, generator=g) * s / 2
    boxes[..., 2:] += s / 2
    boxes[:, 0] = torch.tensor([0.0, 0.0, s, s])
    mask = torch.ones(batch_size, r, dtype=torch.bool)
    mask[:, r // 2 :] = False
    lengths = torch.randint(length // 2, length, (batch_size,), generator=g)
    attention = (torch.arange(length)[None] < lengths[:, None]).long()
    return {
        "images": torch.randn(batch_size, 3, s, s, generator=g),
        "boxes": boxes,
        "box_mask": mask,
        "input_ids": torch.randint(5, vocab, (batch_size, length), generator=g) * attention,
        "attention_mask": attention,
    }


def build(config, batch_size: int, device: torch.device):
    from wenlan_cli.train.loop import Pretrainer
    from wenlan_cli.engine.distributed import DistContext

    model = create_model(config, vocab_size=200).to(device)
    trainer = Pretrainer(TrainConfig(batch_size=batch_size), ctx=DistContext())
    optimizer = trainer.make_optimizer(model)
    return model, optimizer


def full_step(model, optimizer, batch, clip: float = 1.0) -> None:
    model.momentum_update()
    out = model(batch)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.enqueue(out.image_keys, out.text_keys)


def bare_compute(model, batch) -> None:
    image = model.image_encoder(batch["images"], batch["boxes"], batch["box_mask"])
    text = model.text_encoder(batch["input_ids"], batch["attention_mask"])
    (image.sum() + text.sum()).backward()
    with torch.no_grad():
        model.image_encoder_m(batch["images"], batch["boxes"], batch["box_mask"])
        model.text_encoder_m(batch["input_ids"], batch["attention_mask"])
    model.zero_grad(set_to_none=True)


def timed(fn, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def measure(name: str, batch_size: int, rounds: int, repeats: int, device: torch.device, precision: str) -> dict:
    from wenlan_cli.engine.device import autocast_context

    torch.manual_seed(0)
    config = CONFIGS[name]()
    model, optimizer = build(config, batch_size, device)
    batch = {k: v.to(device) for k, v in make_batch(config, batch_size).items()}

    def step():
        with autocast_context(device, precision):
            full_step(model, optimizer, batch)

    def bare():
        with autocast_context(device, precision):
            bare_compute(model, batch)

    for _ in range(3):  # warm-up: allocator, optimizer state, thread pools
        step()
        bare()
    steps, bares = [], []
    for _ in range(rounds):
        steps.append(timed(step, repeats, device))
        bares.append(timed(bare, repeats, device))
    # The fastest block of each kind: background load only ever adds time, so the minimum
    # is the least disturbed estimate (medians reported beside it).
    step_s, bare_s = min(steps), min(bares)
    return {
        "config": config.name,
        "device": str(device),
        "precision": precision,
        "batch_size": batch_size,
        "step_ms": round(step_s * 1000, 2),
        "bare_ms": round(bare_s * 1000, 2),
        "ratio": round(step_s / bare_s, 3),
        "pairs_per_s": round(batch_size / step_s, 1),
        "median_ratio": round(statistics.median(steps) / statistics.median(bares), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,mid")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast dtype of both blocks")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = [measure(name, args.batch_size, args.rounds, args.repeats, device, args.precision) for name in args.configs.split(",")]
    print(json.dumps({
        "benchmark": "train_step",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "results": results,
        "target_ratio": 1.10,
        "met": all(r["ratio"] <= 1.10 for r in results),
    }))


if __name__ == "__main__":
    main()
