"""Work that the scorer sends to its worker processes (or runs in-process).

Everything here is a top-level function of plain data, so that it pickles
into a `forkserver`/`spawn` worker, and the module imports nothing heavy.
The metric functions call pycocoevalcap's own scorer classes on the whole
set, so their numbers are those of a serial pycocoevalcap run by
construction; the parallelism is across metrics, not inside one.
"""

from __future__ import annotations

import logging
import time

__all__ = [
    "OFFICIAL_CLEAN",
    "bleu",
    "cider",
    "clean",
    "init_worker",
    "rouge",
    "sacre_combine",
    "sacre_stats",
    "segment",
    "segment_many",
]

OFFICIAL_CLEAN = "strip, remove '。'"


def init_worker(quiet: bool = True) -> None:
    """Load jieba's dictionary once in this process (silently by default)."""
    import jieba

    logger = logging.getLogger("jieba")
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        jieba.initialize()
    finally:
        if quiet:
            logger.setLevel(level)


def clean(caption: str) -> str:
    """The official text clean-up before segmentation: strip, then drop every '。'."""
    return caption.strip().replace("。", "")


def segment(caption: str) -> str:
    """The official AIC-ICC segmentation of one caption (clean, jieba precise mode, space-join)."""
    import jieba

    return " ".join(jieba.cut(clean(caption), cut_all=False))


def segment_many(captions: list[str]) -> list[str]:
    init_worker()  # a no-op once initialised; keeps in-process use quiet too
    return [segment(c) for c in captions]


def _timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def bleu(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[list[float], float]:
    """pycocoevalcap Bleu(4) (its 'closest' reference length); ([Bleu_1..4], seconds)."""
    from pycocoevalcap.bleu.bleu import Bleu

    (score, _), seconds = _timed(lambda: Bleu(4).compute_score(gts, res, verbose=0))
    return [float(s) for s in score], seconds


def rouge(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, float]:
    """pycocoevalcap Rouge (ROUGE-L, beta 1.2); (score, seconds)."""
    from pycocoevalcap.rouge.rouge import Rouge

    (score, _), seconds = _timed(lambda: Rouge().compute_score(gts, res))
    return float(score), seconds


def cider(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, float]:
    """pycocoevalcap Cider (CIDEr-D: n=4, sigma=6, clipping, x10); (score, seconds)."""
    from pycocoevalcap.cider.cider import Cider

    (score, _), seconds = _timed(lambda: Cider().compute_score(gts, res))
    return float(score), seconds


def sacre_stats(hypotheses: list[str], streams: list[list[str | None]]) -> tuple[list[list[int]], float]:
    """sacreBLEU's per-segment BLEU statistics (tokenize="zh") for one shard; (stats, seconds).

    `streams[j][i]` is reference j of image i, None where image i has fewer
    than j + 1 references (sacreBLEU's way of allowing a variable count).
    These are the first half of `BLEU.corpus_score`; the statistics are whole
    numbers, so shards add up to exactly the corpus statistics.
    """
    start = time.perf_counter()
    from sacrebleu.metrics import BLEU

    stats = BLEU(tokenize="zh")._extract_corpus_statistics(hypotheses, streams)
    return stats, time.perf_counter() - start


def sacre_combine(stats: list[list[int]], num_refs: int) -> tuple[float, str]:
    """Corpus sacreBLEU (tokenize="zh") from all segments' statistics; (score, signature).

    The second half of `BLEU.corpus_score`. `num_refs` is the reference count
    per image, -1 when it varies (as sacreBLEU records it for the signature).
    """
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="zh")
    metric.num_refs = num_refs
    return float(metric._aggregate_and_compute(stats).score), str(metric.get_signature())
