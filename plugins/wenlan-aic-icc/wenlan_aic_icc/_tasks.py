"""Work that the scorer sends to its worker processes (or runs in-process).

Everything here is a top-level function of plain data, so that it pickles
into a `forkserver`/`spawn` worker, and the module imports nothing heavy.
The metric functions call pycocoevalcap's own scorer classes, and
sacreBLEU's public `corpus_score`, on the whole set, so their numbers are
those of a serial run by construction; the parallelism is across metrics,
not inside one.
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
    "sacre_bleu",
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


def sacre_bleu(hypotheses: list[str], streams: list[list[str | None]]) -> tuple[float, str, float]:
    """sacreBLEU corpus BLEU with its Chinese tokenizer; (score, signature, seconds).

    `streams[j][i]` is reference j of image i, None where image i has fewer
    than j + 1 references (sacreBLEU's own way of allowing a variable count).
    One public `corpus_score` call over the whole set, so that the signature
    (``nrefs`` included) is the one sacreBLEU itself reports for this corpus.
    """
    start = time.perf_counter()
    from sacrebleu.metrics import BLEU

    metric = BLEU(tokenize="zh")
    score = metric.corpus_score(hypotheses, streams).score
    return float(score), str(metric.get_signature()), time.perf_counter() - start
