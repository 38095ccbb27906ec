"""The plugin's commands: `wenlan finetune-caption`, `wenlan caption`, `wenlan score`.

Thin: parse options, call the library, print. `register` is what the task's
`add_commands` hook calls. Errors are wenlan's error types (from `wenlan_cli.plugin_api`),
which the core command line prints as one sentence with exit code 1 (a failed run) or
2 (bad usage).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from wenlan_cli.plugin_api import declared_command

from .config import EVAL_BATCH_SIZE, FinetuneConfig

Opt = typer.Option


# --------------------------------------------------------------------------- printing


def scores_table(result: dict, title: str):
    """A rich table of one scoring result on the 0-100 scale (BLEU-1 .. CIDEr, sacreBLEU)."""
    from rich.table import Table

    from .scoring import _LABELS, metrics_x100

    values = metrics_x100(result)
    table = Table(title=title)
    for key in values:
        table.add_column(_LABELS.get(key, key), justify="right")
    table.add_row(*(f"{v:.1f}" for v in values.values()))
    return table


def print_scores(result: dict, title: str, *, to_stderr: bool = False) -> None:
    """The table (stdout, or stderr when stdout carries data), then warnings, one line each, on stderr."""
    from rich.console import Console

    out = Console(stderr=to_stderr, soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    out.print(scores_table(result, title))
    sacre = result.get("sacrebleu")
    if sacre:
        out.print(f"sacreBLEU signature: {sacre['signature']}", highlight=False)
    for warning in result.get("warnings", []):
        err.print(f"warning: {warning}", highlight=False, markup=False)


def scores_json(result: dict, **extra) -> dict:
    from .scoring import metrics_x100

    return {**extra, **result, "metrics_x100": metrics_x100(result)}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def submission_text(captions: dict[str, str]) -> str:
    """The AIC-ICC submission format, one image per line: [{"image_id": ..., "caption": ...}, ...]."""
    lines = [json.dumps({"image_id": k, "caption": v}, ensure_ascii=False) for k, v in captions.items()]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


# --------------------------------------------------------------------------- finetune-caption


def _finetune_caption(call, cfg) -> None:
    """Fine-tune a Chinese captioner on a pretrain checkpoint.

    A Transformer decoder attending to BriVL's image-tower
    region features, from a pretrain checkpoint. Without data options it trains on the
    built-in synthetic data. Prints the validation scores (official AIC-ICC protocol) of the
    best checkpoint and writes them to OUT/scores.json."""
    from rich.console import Console

    from wenlan_cli.plugin_api import check_outputs, checkpoint_input, folder_input

    from .finetune import CaptionFinetuner

    check_outputs([("--out", cfg.out)], [*checkpoint_input("--checkpoint", cfg.checkpoint), *folder_input("--data-dir", cfg.data_dir)])
    result = CaptionFinetuner(cfg).run()
    scores = result.scores
    title = f"{cfg.dataset} {cfg.eval_split}: best checkpoint (step {scores['step']}), x100"
    print_scores(scores, title)
    Console(stderr=True).print(f"Best checkpoint: {result.best}; scores in {result.out / 'scores.json'}", highlight=False)
    if result.stopped_early and result.stopped_early != "max-time":
        import signal

        # Stopped by a signal after its final checkpoint and scores: the shell's convention, as pretrain.
        raise typer.Exit(128 + int(getattr(signal, result.stopped_early)))


# The trainer validates the config (after the output paths are checked).
finetune_caption = declared_command(_finetune_caption, FinetuneConfig, validate=False)


# --------------------------------------------------------------------------- caption


def caption(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders (searched recursively: jpg, png, webp, bmp).", show_default=False)] = None,
    checkpoint: Annotated[str, Opt(help="Caption checkpoint, or a finetune-caption run directory (its best/).")] = ...,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Write the captions here (default: stdout).")] = None,
    dataset: Annotated[Optional[str], Opt(help="Caption a dataset split instead (with its boxes): synth, aic-icc, ...")] = None,
    data_dir: Annotated[Optional[str], Opt(help="Folder of --dataset (synth: default is the cached copy).")] = None,
    split: Annotated[str, Opt(help="Split of --dataset.")] = "val",
    score: Annotated[bool, Opt("--score", help="With --dataset: score the captions against the split's references.")] = False,
    scores_output: Annotated[Optional[Path], Opt(help="With --score: also write the scores to this JSON file.")] = None,
    meteor: Annotated[bool, Opt("--meteor/--no-meteor", help="With --score: include METEOR (needs Java; slow).")] = True,
    beam_size: Annotated[Optional[int], Opt(help="Beam width (1: greedy; default: the checkpoint's).")] = None,
    length_penalty: Annotated[Optional[float], Opt(help="Beams ranked by log-probability / length ** this (default: the checkpoint's).")] = None,
    max_len: Annotated[Optional[int], Opt(help="Most tokens per caption (default: the checkpoint's).")] = None,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = EVAL_BATCH_SIZE,
    workers: Annotated[int, Opt(help="DataLoader processes decoding images.")] = 0,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    skip_bad: Annotated[bool, Opt("--skip-bad", help="Leave unreadable images out instead of failing.")] = False,
    image_column: Annotated[Optional[str], Opt(help="Image column of jsonl/csv data.")] = None,
    text_column: Annotated[Optional[str], Opt(help="Text column of jsonl/csv data.")] = None,
) -> None:
    """Caption images with a caption checkpoint (AIC-ICC JSON).

    The output is the AIC-ICC submission format: [{"image_id": "x.jpg", "caption": "..."}]
    (image_id is the file name)."""
    import dataclasses

    from rich.console import Console

    from wenlan_cli.plugin_api import check_dataset_options, check_outputs, checkpoint_input, folder_input, path_input, pick_device

    from .checkpoint import load_caption_checkpoint, resolve_caption_checkpoint
    from .generate import score_split

    _check_caption_options(images, dataset, score, scores_output, batch_size)
    check_outputs(
        [("--output", output), ("--scores-output", scores_output)],
        [*(i for p in images or [] for i in path_input("IMAGES", p)), *checkpoint_input("--checkpoint", checkpoint),
         *folder_input("--data-dir", data_dir)],
    )
    err = Console(stderr=True, soft_wrap=True)
    if dataset is not None:
        check_dataset_options(dataset, data_dir)
    resolve_caption_checkpoint(checkpoint)  # a missing checkpoint is named before any data is read or generated
    if dataset is not None:
        records = _split_records(dataset, data_dir, split, image_column, text_column)
    else:
        records = _image_records(images)
    dev = pick_device(device)
    loaded = load_caption_checkpoint(checkpoint, device=dev)
    overrides = {k: v for k, v in (("beam_size", beam_size), ("length_penalty", length_penalty), ("max_len", max_len)) if v is not None}
    decode = dataclasses.replace(loaded.decode, **overrides)
    decode.validate()
    result = _caption_with_progress(loaded, records, decode, err, device=dev, batch_size=batch_size, workers=workers, skip_bad=skip_bad)
    _write_captions(result, output, err, f"{loaded.path} (beam {decode.beam_size})")
    if score:
        scored = score_split(result.captions, records, meteor=meteor)
        print_scores(scored, f"{dataset} {split}: {loaded.path}, x100", to_stderr=output is None)
        if scores_output is not None:
            write_json(scores_output, scores_json(scored, checkpoint=str(loaded.path), dataset=dataset, split=split,
                                                  decode=dataclasses.asdict(decode)))


def _check_caption_options(images, dataset, score, scores_output, batch_size) -> None:
    """`caption`'s options that only make sense together, checked before any file is read."""
    from wenlan_cli.plugin_api import UsageError

    if images and dataset is not None:
        raise UsageError("give image files/folders or --dataset NAME, not both.")
    if not images and dataset is None:
        raise UsageError("give image files or folders to caption, or --dataset NAME (with --split).")
    if score and dataset is None:
        raise UsageError("--score needs --dataset: the references come from the dataset split.")
    if scores_output is not None and not score:
        raise UsageError("--scores-output needs --score.")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1.")


def _split_records(dataset: str, data_dir, split: str, image_column, text_column) -> list:
    """The records of a dataset split (with its boxes and reference captions)."""
    from wenlan_cli.plugin_api import UsageError, load_records

    options = {k: v for k, v in (("image_column", image_column), ("text_column", text_column)) if v}
    records = load_records(dataset, data_dir, split, **options)
    if not records:
        raise UsageError(f"the {split} split of {dataset} has no images.")
    return records


def _image_records(images: list[Path]) -> list:
    """One record per image file found under `images`; two files of one name are refused,
    since the submission format identifies images by file name."""
    from wenlan_cli.plugin_api import ImageTextRecord, UsageError, collect_image_paths

    paths = collect_image_paths(images)
    if not paths:
        raise UsageError("no images found (jpg, png, webp, bmp) in " + ", ".join(str(p) for p in images) + ".")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise UsageError(
                f"two images are named {path.name!r} ({seen[path.name]} and {path}); the submission format "
                "identifies images by file name, so caption them separately."
            )
        seen[path.name] = path
    return [ImageTextRecord(image_id=p.name, image_path=p, captions=[]) for p in paths]


def _caption_with_progress(loaded, records, decode, err, **options):
    """Caption `records` under the core's counting progress bar on `err`."""
    from wenlan_cli.plugin_api import counting_progress

    from .generate import caption_records

    progress = counting_progress("captioning", err)
    with progress:
        task = progress.add_task("caption", total=len(records))
        return caption_records(loaded.model, loaded.tokenizer, records, loaded.settings, options=decode,
                               on_batch=lambda n: progress.advance(task, n), **options)


def _write_captions(result, output: Path | None, err, source: str) -> None:
    """The submission JSON to `output` (or stdout), then what was skipped and a summary on `err`."""
    text = submission_text(result.captions)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    for index, message in result.failures:
        err.print(f"skipped: {message}", highlight=False, markup=False)
    err.print(
        f"Captioned {len(result.captions)} image(s) with {source} -> "
        f"{output if output is not None else 'stdout'}" + (f"; skipped {len(result.failures)} unreadable" if result.failures else ""),
        highlight=False,
    )


# --------------------------------------------------------------------------- score


def score(
    pred: Annotated[Path, Opt("--pred", help="Predictions: the AIC-ICC submission format, [{\"image_id\": ..., \"caption\": \"...\"}].")],
    ref: Annotated[Path, Opt("--ref", help="References: an AIC-ICC annotation file (or the same list without url, or a COCO-style reference file).")],
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Also write the scores to this JSON file.")] = None,
    meteor: Annotated[bool, Opt("--meteor/--no-meteor", help="Include METEOR (needs Java; the slowest metric).")] = True,
    workers: Annotated[Optional[int], Opt(help="Worker processes (default: the CPUs, or 1 below 1,000 images).")] = None,
) -> None:
    """Score captions: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

    The official AIC-ICC protocol: jieba precise-mode segmentation,
    pycocoevalcap's PTB tokenizer, BLEU-1..4, METEOR, ROUGE-L, CIDEr-D; plus sacreBLEU (zh)."""
    import warnings

    from wenlan_cli.plugin_api import check_outputs, file_input

    from .scoring import ScoringWarning, score_files

    check_outputs([("--output", output)], [*file_input("--pred", pred), *file_input("--ref", ref)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScoringWarning)
        result = score_files(pred, ref, meteor=meteor, workers=workers)
    print_scores(result, f"{pred} vs {ref}: {result['images']:,} images, x100")
    if output is not None:
        write_json(output, scores_json(result, pred=str(pred), ref=str(ref)))


def register(app: typer.Typer) -> None:
    """The task's `add_commands` hook: the core joins these to its own commands."""
    app.command("finetune-caption")(finetune_caption)
    app.command("caption")(caption)
    app.command("score")(score)
