"""Benchmark: official AIC-ICC caption scoring, parallel vs. a serial pycocoevalcap run.

Builds a synthetic set the size of AIC-ICC validation (30,000 images x 5
references, one prediction per image) from a seeded vocabulary of real
Chinese words (taken from jieba's own dictionary, so segmentation does real
work), scores it with `wenlan_aic_icc.scoring.score_captions`, then scores it
again the plain way -- jieba in a loop, pycocoevalcap's PTBTokenizer, Bleu,
Meteor, Rouge and Cider one after another, sacreBLEU -- and checks that every
number is identical.

Prints progress on stderr and ONE JSON line on stdout:
{"benchmark": "score", "seconds": {...}, "serial_seconds": {...},
 "speedup": ..., "identical": true, "target_s": 60, ...}

    .venv/bin/python benchmarks/score.py [--images 30000] [--refs 5] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import sys
import threading
import time

TARGET_S = 60


class CpuMeter:
    """CPU seconds used by this process and everything it starts, while in a `with` block.

    Children this process waits for (the JVMs) are in RUSAGE_CHILDREN; worker
    processes belong to multiprocessing's forkserver, which is never waited
    for, so they are read from /proc while they run. On a shared machine wall
    time says little; CPU seconds / cores is the wall time on idle cores.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._stop = threading.Event()
        self._workers: dict[int, float] = {}

    @staticmethod
    def _now() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def _poll(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(0.25):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        if b"multiprocessing" not in handle.read():
                            continue
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == os.getpid() or self._workers.get(int(fields[1])) is not None:
                    self._workers[int(entry)] = (int(fields[11]) + int(fields[12])) / tick

    def __enter__(self) -> "CpuMeter":
        self._start = self._now()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if os.path.isdir("/proc"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.seconds = self._now() - self._start + sum(self._workers.values())


def _vocabulary(rng: random.Random) -> dict[str, list[str]]:
    """Common 2-3 character words from jieba's dictionary, by part of speech."""
    import jieba

    words: dict[str, list[str]] = {"n": [], "v": [], "a": []}
    with open(os.path.join(os.path.dirname(jieba.__file__), "dict.txt"), encoding="utf-8") as handle:
        for line in handle:
            word, freq, tag = line.split()
            if tag in words and int(freq) >= 1000 and 2 <= len(word) <= 3:
                if all("\u4e00" <= ch <= "\u9fff" for ch in word):
                    words[tag].append(word)
    sizes = {"n": 2000, "v": 800, "a": 300}
    for tag, items in words.items():
        items.sort()
        rng.shuffle(items)
        del items[sizes[tag] :]
    return words


def synthetic_set(images: int, refs: int, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    """AIC-ICC-like captions: '一个穿着红色上衣的女人在宽阔的街道上骑着自行车' (about 21 characters)."""
    rng = random.Random(seed)
    vocab = _vocabulary(rng)
    nouns, verbs, adjs = vocab["n"], vocab["v"], vocab["a"]
    heads = ["一个", "两个", "一群", "三个", "一位", "几个"]
    places = ["上", "里", "旁边", "前面", "中", "下"]

    def pick(topic: list[str], p: float, pool: list[str]) -> str:
        return rng.choice(topic) if rng.random() < p else rng.choice(pool)

    def caption(topic: list[str]) -> str:
        words = [rng.choice(heads)]
        if rng.random() < 0.6:
            words += ["穿着", rng.choice(adjs), rng.choice(topic[6:8]), "的"]
        if rng.random() < 0.5:
            words += [rng.choice(adjs), "的"]
        words.append(pick(topic[0:2], 0.8, nouns))
        words += ["在", rng.choice(adjs), "的", pick(topic[2:4], 0.8, nouns), rng.choice(places)]
        words.append(pick(topic[8:10], 0.8, verbs))
        if rng.random() < 0.6:
            words += ["着", pick(topic[4:6], 0.7, nouns)]
        return "".join(words)

    predictions: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    for _ in range(images):
        topic = rng.sample(nouns, 8) + rng.sample(verbs, 2)
        image_id = f"{rng.getrandbits(160):040x}.jpg"
        # Stray whitespace and a final '。' now and then, as in the released annotations.
        references[image_id] = [("\n" if rng.random() < 0.05 else "") + caption(topic) for _ in range(refs)]
        predictions[image_id] = caption(topic) + ("。" if rng.random() < 0.3 else "")
    return predictions, references


def serial(
    predictions: dict[str, str], references: dict[str, list[str]], sacrebleu: bool = True
) -> tuple[dict, dict | None, dict]:
    """The plain, one-thing-after-another run; (metrics, sacrebleu, seconds)."""
    import jieba
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    seconds: dict[str, float] = {}
    start = t = time.perf_counter()
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()

    def seg(text: str) -> str:
        return " ".join(jieba.cut(text.strip().replace("。", ""), cut_all=False))

    order = list(references)
    gts = {k: [{"caption": seg(c)} for c in references[k] if c.strip().replace("。", "").strip()] for k in order}
    res = {k: [{"caption": seg(predictions[k])}] for k in order}
    seconds["segment"] = time.perf_counter() - t

    t = time.perf_counter()
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    seconds["tokenize"] = time.perf_counter() - t

    metrics = serial_metrics(gts, res, seconds)
    if not sacrebleu:
        seconds["total"] = time.perf_counter() - start
        return metrics, None, seconds
    t = time.perf_counter()
    sacre = serial_sacrebleu(predictions, references, order)
    seconds["sacreBLEU"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return metrics, sacre, seconds


def serial_metrics(gts: dict, res: dict, seconds: dict[str, float]) -> dict[str, float]:
    """pycocoevalcap's four scorers one after another on tokenised captions, each timed into `seconds`."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    metrics: dict[str, float] = {}
    t = time.perf_counter()
    bleus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    seconds["Bleu"] = time.perf_counter() - t
    t = time.perf_counter()
    meteor = Meteor()
    metrics["METEOR"], _ = meteor.compute_score(gts, res)
    del meteor
    seconds["METEOR"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    seconds["ROUGE_L"] = time.perf_counter() - t
    t = time.perf_counter()
    metrics["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    seconds["CIDEr"] = time.perf_counter() - t
    for i, value in enumerate(bleus, 1):
        metrics[f"Bleu_{i}"] = value
    return metrics


def serial_sacrebleu(predictions: dict[str, str], references: dict[str, list[str]], order: list[str]) -> dict:
    """sacreBLEU (zh tokenizer) over the cleaned raw captions, references as streams."""
    from sacrebleu.metrics import BLEU

    clean_refs = [[c.strip().replace("。", "") for c in references[k]] for k in order]
    clean_refs = [[c for c in refs if c.strip()] for refs in clean_refs]
    depth = max(len(r) for r in clean_refs)
    streams = [[r[j] if j < len(r) else None for r in clean_refs] for j in range(depth)]
    bleu = BLEU(tokenize="zh")
    sacre = bleu.corpus_score([predictions[k].strip().replace("。", "") for k in order], streams)
    return {"score": sacre.score, "signature": str(bleu.get_signature())}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30_000)
    parser.add_argument("--refs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=None, help="default: the usable CPUs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-sacrebleu", action="store_true", help="time the official metrics only")
    return parser.parse_args()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    from wenlan_aic_icc.scoring import format_metrics, score_captions

    log(f"building {args.images} images x {args.refs} references ...")
    predictions, references = synthetic_set(args.images, args.refs, args.seed)

    log("parallel scoring ...")
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    with CpuMeter() as fast_cpu:
        fast = score_captions(predictions, references, workers=args.workers, sacrebleu=not args.no_sacrebleu)
    wall = time.perf_counter() - t
    log(f"  {wall:.1f} s  {format_metrics(fast, 2)}")

    log("serial pycocoevalcap run ...")
    with CpuMeter() as slow_cpu:
        slow_metrics, slow_sacre, slow_seconds = serial(predictions, references, sacrebleu=not args.no_sacrebleu)
    log(f"  {slow_seconds['total']:.1f} s")
    load_after = os.getloadavg()[0]

    identical = all(fast["metrics"].get(m) == slow_metrics[m] for m in slow_metrics) and fast["sacrebleu"] == slow_sacre
    if not identical:
        for m in slow_metrics:
            log(f"  {m}: parallel {fast['metrics'].get(m)!r} serial {slow_metrics[m]!r}")
    seconds = dict(fast["seconds"], total=round(wall, 3))
    print(
        json.dumps(
            {
                "benchmark": "score",
                "images": args.images,
                "references": fast["references"],
                "workers": args.workers or len(os.sched_getaffinity(0)),
                "seconds": seconds,
                "serial_seconds": {k: round(v, 3) for k, v in slow_seconds.items()},
                "speedup": round(slow_seconds["total"] / wall, 2),
                # CPU seconds of each run (workers and JVMs included), and that divided by the cores:
                # the wall time of the parallel run on otherwise idle cores, at best.
                "cpu_seconds": round(fast_cpu.seconds, 1),
                "serial_cpu_seconds": round(slow_cpu.seconds, 1),
                "cpu_bound_s": round(fast_cpu.seconds / len(os.sched_getaffinity(0)), 1),
                "identical": identical,
                "target_s": TARGET_S,
                # 1-minute load average before / after: other work on the machine slows both runs.
                "loadavg": [round(load_before, 2), round(load_after, 2)],
                "cpus": len(os.sched_getaffinity(0)),
                "metrics": fast["metrics"],
                "sacrebleu": fast["sacrebleu"],
            }
        )
    )

if __name__ == "__main__":
    main()
