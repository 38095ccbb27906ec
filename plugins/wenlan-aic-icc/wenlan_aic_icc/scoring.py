"""Official AIC-ICC (AI Challenger 2017) caption scoring, run in parallel.

Protocol (the AI Challenger evaluation tool, ``caption_eval``):

1. Each predicted caption is stripped, every ``。`` removed, and segmented with
   jieba's precise mode; the words are joined with spaces
   (``" ".join(jieba.cut(c.strip().replace("。", ""), cut_all=False))``).
2. References: the official tool read a COCO-style reference file whose
   captions the organisers had already segmented, and used them as they are.
   A COCO-style reference file (``{"annotations": [...], "images": [...]}``)
   is therefore used as is here too. Raw references (an AIC-ICC annotation
   file or a list of ``{"image_id", "caption": [...]}``) are segmented exactly
   like the predictions -- strip, drop ``。``, jieba precise mode -- which is
   how the widely used reproduction of that reference file
   (``prepro_reference_json.py`` of the 3rd-placed AIC-ICC entry) built it.
   References that are empty after that clean-up are left out.
3. pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1, ``-preserveLines
   -lowerCase``, punctuation tokens removed) on both sides, as COCOEvalCap.
4. pycocoevalcap's Bleu(4), Meteor, Rouge and Cider (CIDEr-D); no SPICE.
   Values are pycocoevalcap's raw ones (BLEU in 0..1, CIDEr around 0..10);
   `metrics_x100` scales them for tables.

Images are scored in the order of the references; a corpus mean depends on
summation order in its last bits, and the official tool's order (a Python 2
dict of hashed ids) cannot be reproduced anyway.

Extra, not part of the official protocol: sacreBLEU corpus BLEU with its
Chinese tokenizer (``tokenize="zh"``, character-level for CJK) on the cleaned
captions (step 1's strip and ``。`` removal, no jieba), with its signature.

Java: every metric reads the PTB tokenizer's output and that tokenizer is a
Java program with no equivalent in Python (it lower-cases, splits and maps
characters by a large lexer grammar; a re-implementation could not be shown
to give the same tokens), so without ``java`` on PATH scoring stops with a
`JavaError`. When Java runs but METEOR cannot (its JVM does not start, e.g.
``-Xmx2G`` cannot be reserved, or it dies), METEOR is left out and a one-line
message is added to ``result["warnings"]`` (and issued with `warnings.warn`,
category `ScoringWarning`); the other metrics are reported.

Speed: jieba runs in worker processes (dictionary loaded once per worker),
the two PTB runs and the METEOR JVM run beside them, and Bleu, Rouge and
Cider and sacreBLEU each run whole in a worker while METEOR scores (sacreBLEU
as one public ``corpus_score`` call, so its signature is its own). Every
metric is computed by the same code on the same inputs as a serial
pycocoevalcap / sacreBLEU run, so the results are identical to the last bit.
Worker processes are started with `forkserver` (safe when the caller holds
threads, e.g. torch's), so a script that calls this must do so under
``if __name__ == "__main__":``, as with any multiprocessing code.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from wenlan_cli.plugin_api import DataError, json_type_name, quote_value, read_json, usable_cores, UsageError

from wenlan_aic_icc import _tasks
from wenlan_aic_icc._java import (
    JavaError,
    MeteorFailed,
    MeteorProcess,
    ScoringError,
    ptb_tokenize,
    require_java,
)

__all__ = [
    "METRICS",
    "JavaError",
    "ScoringError",
    "ScoringWarning",
    "format_metrics",
    "load_predictions",
    "load_references",
    "metrics_x100",
    "score_captions",
    "score_files",
    "segment",
]

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_LABELS = {
    "Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3", "Bleu_4": "BLEU-4",
    "METEOR": "METEOR", "ROUGE_L": "ROUGE-L", "CIDEr": "CIDEr", "sacreBLEU": "sacreBLEU",
}  # fmt: skip
_SHOW_IDS = 5
_CHUNK = 4000  # captions per jieba task
_SMALL = 1000  # fewer images than this: workers=None scores in this process


def segment(caption: str) -> str:
    """The protocol's segmentation of one caption: strip, drop '。', jieba precise mode, space-join."""
    _tasks.init_worker()
    return _tasks.segment(caption)


class ScoringWarning(UserWarning):
    """A metric was left out (e.g. METEOR when its JVM cannot run)."""


# --------------------------------------------------------------------------- files


def _image_id(value: object, where: str, field: str = "image_id") -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: {field!r} is {json_type_name(value)}; expected an image name such as \"x.jpg\".")


def _entries(data: Any, path: Path, what: str) -> list[dict]:
    if not isinstance(data, list):
        raise DataError(f"{path}: holds {json_type_name(data)} at the top level; expected {what}.")
    if not data:
        raise DataError(f"{path}: holds an empty list; there is nothing to score.")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DataError(f"{path} entry {i}: is {json_type_name(entry)}; expected an object with 'image_id' and 'caption'.")
    return data


def load_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Read an AIC-ICC submission: ``[{"image_id": "x.jpg", "caption": "..."}, ...]``.

    Returns image id -> caption, in file order, captions untouched (the
    protocol's clean-up happens when scoring). Raises DataError naming the
    file and entry for anything else, including an image id given twice.
    """
    path = Path(path)
    entries = _entries(read_json(path), path, 'a JSON list of {"image_id": ..., "caption": "..."} objects')
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"{path} entry {i}"
        image_id = _image_id(entry.get("image_id"), where)
        caption = entry.get("caption")
        if not isinstance(caption, str):
            raise DataError(f"{where} (image_id {image_id!r}): 'caption' is {json_type_name(caption)}; expected one string.")
        if image_id in first:
            raise DataError(
                f"{where}: image_id {image_id!r} repeats entry {first[image_id]}; give one caption per image."
            )
        first[image_id] = i
        out[image_id] = caption
    return out


def _read_references(path: Path) -> tuple[dict[str, list[str]], bool]:
    """(image id -> references, whether they are already segmented)."""
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        return _read_coco_references(data, path), True
    entries = _entries(
        data, path, 'a JSON list of {"image_id": ..., "caption": [...]} objects (or a COCO-style reference file)'
    )
    out: dict[str, list[str]] = {}
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        where = f"{path} entry {i}"
        image_id = _image_id(entry.get("image_id"), where)
        captions = entry.get("caption")
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            bad = captions if not isinstance(captions, list) else next(c for c in captions if not isinstance(c, str))
            raise DataError(
                f"{where} (image_id {image_id!r}): 'caption' holds {json_type_name(bad)}; expected a list of strings."
            )
        if image_id in first:
            raise DataError(f"{where}: image_id {image_id!r} repeats entry {first[image_id]}; list each image once.")
        first[image_id] = i
        out[image_id] = list(captions)
    return out, False


def _read_coco_references(data: dict, path: Path) -> dict[str, list[str]]:
    annotations = data.get("annotations")
    if not isinstance(annotations, list) or not annotations:
        raise DataError(f"{path}: 'annotations' is {json_type_name(annotations)}; expected a non-empty list of captions.")
    images = data.get("images", [])
    if not isinstance(images, list):
        raise DataError(f"{path}: 'images' is {json_type_name(images)}; expected a list of {{'id', 'file_name'}} objects.")
    names: dict[object, str] = {}
    for i, image in enumerate(images):
        where = f"{path} images entry {i}"
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(f"{where}: expected an object with 'id' and 'file_name'.")
        name = _image_id(image.get("file_name", image["id"]), where, "file_name")
        if names.setdefault(image["id"], name) != name:
            raise DataError(f"{where}: id {quote_value(image['id'])} is given two file names.")
    out: dict[str, list[str]] = {}
    for i, ann in enumerate(annotations):
        where = f"{path} annotations entry {i}"
        if not isinstance(ann, dict):
            raise DataError(f"{where}: is {json_type_name(ann)}; expected an object with 'image_id' and 'caption'.")
        raw_id = ann.get("image_id")
        if images and raw_id not in names:
            raise DataError(f"{where}: image_id {quote_value(raw_id)} is not in the file's 'images' list.")
        image_id = names[raw_id] if images else _image_id(raw_id, where)
        caption = ann.get("caption")
        if not isinstance(caption, str):
            raise DataError(f"{where} (image {image_id!r}): 'caption' is {json_type_name(caption)}; expected a string.")
        out.setdefault(image_id, []).append(caption)
    return out


def load_references(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read references: image id -> list of captions, in file order.

    Accepts an AIC-ICC annotation file (``[{"url", "image_id": "x.jpg",
    "caption": [5 strings]}]``, captions with stray whitespace are fine), the
    same list without ``url``, or the COCO-style reference file of the AI
    Challenger evaluation tool (``{"annotations": [{"image_id", "caption"}],
    "images": [{"id", "file_name"}]}``; images are named by ``file_name``).
    Captions are returned untouched. `score_files` uses COCO-style captions as
    already segmented (as the official tool did) and segments the others.
    """
    return _read_references(Path(path))[0]


# --------------------------------------------------------------------------- checks


def _n(count: int, noun: str, verb: str = "") -> str:
    """'1 image has' / '3 images have' (noun without its plural s; verb 'is' or 'has')."""
    plural = {"is": "are", "has": "have", "": ""}[verb]
    return f"{count} {noun}{'' if count == 1 else 's'}" + (f" {verb if count == 1 else plural}" if verb else "")


def _some(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOW_IDS])
    return shown + (", ..." if len(ids) > _SHOW_IDS else "")


def _check(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    pred_name: str,
    ref_name: str,
) -> None:
    if not references:
        raise DataError(f"{ref_name}: there are no reference images to score against.")
    bad_pred = [k for k, v in predictions.items() if not isinstance(v, str)]
    if bad_pred:
        raise DataError(
            f"{pred_name}: {_n(len(bad_pred), 'caption', 'is')} not a string (image ids {_some(bad_pred)})."
        )
    bad_ref = [k for k, v in references.items() if isinstance(v, str) or not all(isinstance(c, str) for c in v)]
    if bad_ref:
        raise DataError(
            f"{ref_name}: {_n(len(bad_ref), 'image')} without a list of caption strings (image ids {_some(bad_ref)})."
        )
    missing = [k for k in references if k not in predictions]
    if missing:
        raise DataError(
            f"{pred_name}: {len(missing)} of {_n(len(references), 'reference image')} "
            f"{'has' if len(missing) == 1 else 'have'} no predicted caption "
            f"(image ids {_some(missing)})."
        )
    extra = [k for k in predictions if k not in references]
    if extra:
        raise DataError(
            f"{pred_name}: {_n(len(extra), 'image id', 'is')} not in {ref_name} ({_some(extra)})."
        )
    empty = [k for k in references if not _tasks.clean(predictions[k]).strip()]
    if empty:
        raise DataError(
            f"{pred_name}: {_n(len(empty), 'predicted caption', 'is')} empty or only whitespace/'。' "
            f"(image ids {_some(empty)})."
        )


def _usable_references(
    references: Mapping[str, Sequence[str]], segmented: bool, ref_name: str
) -> dict[str, list[str]]:
    """References that survive the clean-up, per image; DataError for images left with none."""
    keep = (lambda c: c.strip()) if segmented else (lambda c: _tasks.clean(c).strip())
    out = {k: [c for c in v if keep(c)] for k, v in references.items()}
    empty = [k for k, v in out.items() if not v]
    if empty:
        raise DataError(
            f"{ref_name}: {_n(len(empty), 'image', 'has')} no non-empty reference caption (image ids {_some(empty)})."
        )
    return out


def _workers(workers: int | None) -> int:
    if workers is None:
        return max(1, usable_cores())
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a positive whole number, not {workers!r}.")
    return workers


# --------------------------------------------------------------------------- running


class _InProcess(Executor):
    """An executor that runs each call at once in this process (workers=1)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _pool(workers: int) -> Executor:
    if workers == 1:
        _tasks.init_worker()
        return _InProcess()
    methods = multiprocessing.get_all_start_methods()
    # forkserver/spawn: a caller may hold threads (torch, our METEOR writer), where fork is unsafe.
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_tasks.init_worker)


class _Segmenting:
    """jieba over distinct captions in worker tasks; `result()` maps them back to every caption.

    (Models repeat captions a lot; segmentation is a pure function of the text.)
    """

    def __init__(self, pool: Executor, texts: list[str], workers: int):
        self.texts = texts
        self.distinct = list(dict.fromkeys(texts))
        size = max(500, min(_CHUNK, math.ceil(len(self.distinct) / (2 * workers))))
        self.futures = [
            pool.submit(_tasks.segment_many, self.distinct[i : i + size]) for i in range(0, len(self.distinct), size)
        ]

    def result(self) -> list[str]:
        segmented: list[str] = []
        for future in self.futures:
            segmented.extend(future.result())
        if len(self.distinct) == len(self.texts):
            return segmented
        lookup = dict(zip(self.distinct, segmented))
        return [lookup[t] for t in self.texts]


def _submit_sacre(pool: Executor, hyps: list[str], refs: list[list[str]], segmented: bool) -> Future:
    """sacreBLEU over the cleaned captions (strip, no '。'; no jieba) as one worker task.

    One task, not shards: sharded statistics would need sacreBLEU's private
    methods, and its signature's reference count is only its own when one
    `corpus_score` call sees every image. It runs beside CIDEr, which takes
    longer, so the split would not shorten the run.
    """
    clean_hyps = [_tasks.clean(h) for h in hyps]
    clean_refs = [[c.strip() if segmented else _tasks.clean(c) for c in r] for r in refs]
    depth = max(len(r) for r in clean_refs)
    streams = [[r[j] if j < len(r) else None for r in clean_refs] for j in range(depth)]
    return pool.submit(_tasks.sacre_bleu, clean_hyps, streams)


def _close_pool(pool: Executor, finished: bool) -> None:
    """Shut the pool down; after a failure, stop workers still busy with a metric."""
    if not finished:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def _timed_meteor(meteor: MeteorProcess, gts: dict, res: dict) -> tuple[float, float]:
    start = time.perf_counter()
    score, _ = meteor.score(gts, res)
    return score, time.perf_counter() - start


class _Thread(threading.Thread):
    """A thread whose result (or exception) is collected with `result()`."""

    def __init__(self, fn: Callable[[], Any], name: str):
        super().__init__(name=name, daemon=True)
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _segmentation_warnings(refs: Mapping[str, list[str]], order: list[str], segmented: bool, ref_name: str) -> list[str]:
    """A warning when references taken as segmented look like raw text: the official
    tool would score them near zero, and the figure would look like a model failure."""
    if not segmented:
        return []
    unsegmented = [k for k in order if any(len(c.strip()) > 6 and " " not in c.strip() for c in refs[k])]
    if len(unsegmented) * 2 > len(order):
        return [
            f"{ref_name}: most reference captions contain no spaces, yet they are taken as already "
            "segmented (as the official tool took its COCO-style reference file); scores will be near "
            "zero if they are raw text."
        ]
    return []


def _tokenized(
    pool: Executor,
    java: str,
    order: list[str],
    hyp_texts: list[str],
    ref_lists: list[list[str]],
    n_workers: int,
    segmented: bool,
    seconds: dict[str, float],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """jieba then PTB on both sides, as the metrics expect them: (gts, res) by image.

    PTB starts on each side as soon as that side is segmented (two JVMs, as
    pycocoevalcap runs two); the times go into `seconds` ("segment", "tokenize").
    """
    t0 = time.perf_counter()
    flat_refs = [c for r in ref_lists for c in r]
    hyp_jobs = _Segmenting(pool, hyp_texts, n_workers)
    ref_jobs = None if segmented else _Segmenting(pool, flat_refs, n_workers)
    hyp_seg = hyp_jobs.result()
    ptb_hyp = _Thread(lambda: ptb_tokenize(java, hyp_seg), "ptb-predictions")
    ref_seg = flat_refs if ref_jobs is None else ref_jobs.result()
    seconds["segment"] = time.perf_counter() - t0
    ptb_ref = _Thread(lambda: ptb_tokenize(java, ref_seg), "ptb-references")
    hyp_tok, ref_tok = ptb_hyp.result(), ptb_ref.result()
    seconds["tokenize"] = time.perf_counter() - t0 - seconds["segment"]

    res: dict[str, list[str]] = {k: [h] for k, h in zip(order, hyp_tok)}
    gts: dict[str, list[str]] = {}
    pos = 0
    for k, r in zip(order, ref_lists):
        gts[k] = ref_tok[pos : pos + len(r)]
        pos += len(r)
    return gts, res


def _run_metrics(
    pool: Executor,
    meteor_proc: MeteorProcess | None,
    gts: dict[str, list[str]],
    res: dict[str, list[str]],
    sacre_inputs: tuple[list[str], list[list[str]], bool] | None,
    seconds: dict[str, float],
    warn: list[str],
) -> tuple[dict[str, float], dict | None]:
    """Every metric at once: METEOR in its JVM fed by a thread, the others in the pool.

    Submitted longest first, so that with two workers CIDEr gets one and the rest
    share the other. `sacre_inputs` (raw predictions, raw references, segmented) or
    None to leave sacreBLEU out. Returns the metrics by name and the sacreBLEU figure.
    """
    meteor_run = None if meteor_proc is None else _Thread(lambda: _timed_meteor(meteor_proc, gts, res), "meteor")
    cider_f = pool.submit(_tasks.cider, gts, res)
    sacre_f = _submit_sacre(pool, *sacre_inputs) if sacre_inputs is not None else None
    bleu_f = pool.submit(_tasks.bleu, gts, res)
    rouge_f = pool.submit(_tasks.rouge, gts, res)

    metrics: dict[str, float] = {}
    if meteor_run is not None:
        try:
            metrics["METEOR"], seconds["METEOR"] = meteor_run.result()
        except MeteorFailed as exc:
            warn.append(f"METEOR skipped: {exc}")
    bleus, seconds["Bleu"] = bleu_f.result()
    metrics["ROUGE_L"], seconds["ROUGE_L"] = rouge_f.result()
    metrics["CIDEr"], seconds["CIDEr"] = cider_f.result()
    sacre = None
    if sacre_f is not None:
        sacre_score, signature, seconds["sacreBLEU"] = sacre_f.result()
        sacre = {"score": sacre_score, "signature": signature}
    for i, value in enumerate(bleus, 1):
        metrics[f"Bleu_{i}"] = value
    return metrics, sacre


def _score(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    meteor: bool,
    sacrebleu: bool,
    workers: int | None,
    references_segmented: bool,
    pred_name: str,
    ref_name: str,
) -> dict:
    start = time.perf_counter()
    n_workers = _workers(workers)
    if workers is None and len(references) < _SMALL:
        n_workers = 1  # starting worker processes would cost more than it saves
    _check(predictions, references, pred_name, ref_name)
    refs = _usable_references(references, references_segmented, ref_name)
    java = require_java()
    order = list(refs)  # images in reference order
    warn = _segmentation_warnings(refs, order, references_segmented, ref_name)
    seconds: dict[str, float] = {}
    hyp_texts = [predictions[k] for k in order]
    ref_lists = [refs[k] for k in order]

    meteor_proc = MeteorProcess(java) if meteor else None  # its JVM loads while we segment
    pool: Executor | None = None
    finished = False
    try:
        pool = _pool(n_workers)
        gts, res = _tokenized(pool, java, order, hyp_texts, ref_lists, n_workers, references_segmented, seconds)
        sacre_inputs = (hyp_texts, ref_lists, references_segmented) if sacrebleu else None
        metrics, sacre = _run_metrics(pool, meteor_proc, gts, res, sacre_inputs, seconds, warn)
        finished = True
    except BrokenProcessPool:
        raise ScoringError(
            "a worker process of the caption scorer died; a script that scores captions must call it under "
            "'if __name__ == \"__main__\":' (worker processes import the main module), or pass workers=1."
        ) from None
    finally:
        if meteor_proc is not None:
            meteor_proc.close()
        if pool is not None:
            _close_pool(pool, finished)

    ordered = {m: metrics[m] for m in METRICS if m in metrics}
    for message in warn:
        warnings.warn(message, ScoringWarning, stacklevel=3)
    seconds["total"] = time.perf_counter() - start
    return {
        "metrics": ordered,
        "sacrebleu": sacre,
        "images": len(order),
        "references": sum(len(r) for r in ref_lists),
        "warnings": warn,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }


def score_captions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    meteor: bool = True,
    sacrebleu: bool = True,
    workers: int | None = None,
    references_segmented: bool = False,
) -> dict:
    """Score predicted captions against references with the official AIC-ICC protocol.

    `predictions`: image id -> one caption; `references`: image id -> captions.
    Both must name the same images. `meteor=False` leaves METEOR out (it is
    the slowest metric); `sacrebleu=False` leaves out the sacreBLEU figure (a
    quarter of the work on AIC-ICC val). `workers`: processes for jieba and
    the metrics (default: the CPUs this process may use, or 1 below 1,000
    images; 1 runs everything in this process, the JVMs aside).
    `references_segmented=True` uses the references as already segmented
    (space-separated words), skipping jieba and the ``。`` removal for them.

    Returns ``{"metrics": {"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"},
    "sacrebleu": {"score", "signature"} or None, "images", "references",
    "warnings": [one-line strings], "seconds": {stage: seconds}}``; values are
    pycocoevalcap's raw floats (see `metrics_x100`). Raises DataError for
    missing, extra or empty captions and JavaError without Java.
    """
    return _score(
        predictions,
        references,
        meteor=meteor,
        sacrebleu=sacrebleu,
        workers=workers,
        references_segmented=references_segmented,
        pred_name="predictions",
        ref_name="references",
    )


def score_files(
    pred_path: str | os.PathLike,
    ref_path: str | os.PathLike,
    *,
    meteor: bool = True,
    sacrebleu: bool = True,
    workers: int | None = None,
) -> dict:
    """`score_captions` on a submission file and a reference file (see `load_references`)."""
    predictions = load_predictions(pred_path)
    references, segmented = _read_references(Path(ref_path))
    return _score(
        predictions,
        references,
        meteor=meteor,
        sacrebleu=sacrebleu,
        workers=workers,
        references_segmented=segmented,
        pred_name=str(pred_path),
        ref_name=str(ref_path),
    )


# --------------------------------------------------------------------------- reporting


def metrics_x100(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a `score_captions` result on the 0-100 scale of papers' tables.

    BLEU, METEOR, ROUGE-L and CIDEr are multiplied by 100 (CIDEr 2.207 ->
    220.7); sacreBLEU, already on that scale, is added as "sacreBLEU".
    """
    metrics = result.get("metrics", result)
    out = {name: 100.0 * float(value) for name, value in metrics.items() if name in METRICS}
    sacre = result.get("sacrebleu")
    if isinstance(sacre, Mapping) and "score" in sacre:
        out["sacreBLEU"] = float(sacre["score"])
    return out


def format_metrics(result: Mapping[str, Any], digits: int = 1) -> str:
    """One line for a table or log: ``BLEU-1 67.7  BLEU-2 48.2 ... CIDEr 89.7  sacreBLEU 30.1``."""
    return "  ".join(f"{_LABELS.get(k, k)} {v:.{digits}f}" for k, v in metrics_x100(result).items())
