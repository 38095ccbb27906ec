"""The HTML page of `wenlan report`: one file, every image inlined as a data: URI."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import re
import statistics
from pathlib import Path

from ..errors import DataError, UsageError
from .run import RunRecord, read_run

__all__ = ["render_page", "write_report"]

_RECALL_KEY = re.compile(r"^(t2i|i2t)_r(\d+)$")

_CSS = """
body{font-family:-apple-system,"Segoe UI","PingFang SC","Microsoft YaHei","Noto Sans CJK SC",sans-serif;
margin:2em auto;max-width:1100px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#666;margin-top:0}dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2em 1.2em}
dl.summary dt{color:#666}dl.summary dd{margin:0}
figure.curve{margin:1em 0}figure.curve img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ddd;padding:.3em .7em}
th{background:#f6f6f6;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.settings td{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
.caption{color:#666;font-size:.9em}.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
.example{border:1px solid #e4e4e4;border-radius:6px;padding:.6em .9em;margin:1em 0}
.query{font-size:1.15em;margin:.2em 0 .5em}.query .meta{font-size:.8em;color:#666;margin-left:.8em}
.hits{display:flex;flex-wrap:wrap;gap:.6em}.hit{margin:0;text-align:center;font-size:.8em;color:#444}
.hit img{display:block;width:128px;height:128px;object-fit:contain;background:#fafafa;border:3px solid #ddd;border-radius:4px}
.hit.gold img{border-color:#2e9e44}.hit.gold figcaption{color:#2e7d32;font-weight:600}
.golds{margin-top:.5em;font-size:.9em;color:#555}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e5 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


# --------------------------------------------------------------------------- sections


def _summary(run: RunRecord) -> str:
    cfg = run.config
    rows: list[tuple[str, str]] = [("run", str(run.path.resolve()))]
    model = cfg.get("model")
    if model:
        rows.append(("model", f"{model} (loss {cfg.get('loss') or 'from the model config'})"))
    data = str(cfg.get("dataset", "?"))
    if cfg.get("data_dir"):
        data += f" in {cfg['data_dir']}"
    elif cfg.get("dataset") == "synth":
        data += " (built-in synthetic data)"
    rows.append(("data", data))
    if run.train:
        last = run.train[-1]
        planned = cfg.get("steps")
        if planned is None and cfg.get("epochs") is not None:
            planned = f"{cfg['epochs']} epochs"
        rows.append(("steps", f"{last['step']:,}" + (f" of {planned:,}" if isinstance(planned, int) else f" ({planned})" if planned else "")))
        rows.append(("final loss", _number(last.get("loss"))))
        rows.append(("final learning rate", _number(last.get("lr"))))
        rates = [e["pairs_per_s"] for e in run.train if isinstance(e.get("pairs_per_s"), (int, float)) and e["pairs_per_s"] > 0]
        if rates:
            rows.append(("throughput", f"{statistics.median(rates):,.1f} pairs/s (median)"))
        if isinstance(last.get("time"), (int, float)):
            rows.append(("training time", _duration(last["time"])))
        if last.get("skipped_images"):
            rows.append(("skipped images", f"{last['skipped_images']:,}"))
    else:
        rows.append(("steps", "none logged yet"))
    rows.append(("checkpoint", str(run.checkpoint) if run.checkpoint else "none yet"))
    body = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<dl class="summary">{body}</dl>'


def _curves(images: dict[str, bytes | None]) -> str:
    titles = {"loss": "Training loss", "lr": "Learning rate", "recall": "Retrieval recall"}
    parts = []
    for name, png in images.items():
        if png is None:
            what = "evaluation" if name == "recall" else "training"
            parts.append(f'<p class="note" id="{name}-curve">No {what} lines in metrics.jsonl yet: no {titles[name].lower()} curve.</p>')
        else:
            parts.append(
                f'<figure class="curve" id="{name}-curve"><img src="{_png_uri(png)}" alt="{_e(titles[name])} curve"></figure>'
            )
    return "".join(parts)


def recall_table_html(metrics: dict, source: str | None) -> str:
    """The final recall as an HTML table (rows text->image and image->text)."""
    found: dict[str, set[int]] = {"i2t": set(), "t2i": set()}
    for key in metrics:
        m = _RECALL_KEY.match(key)
        if m:
            found[m.group(1)].add(int(m.group(2)))
    ks = sorted(found["i2t"] & found["t2i"])
    median = all(f"{p}_median_rank" in metrics for p in ("t2i", "i2t"))
    head = "".join(f"<th>R@{k}</th>" for k in ks) + "<th>mean</th>" + ("<th>MedR</th>" if median else "")
    rows = []
    for label, prefix in (("text→image", "t2i"), ("image→text", "i2t")):
        values = [float(metrics[f"{prefix}_r{k}"]) for k in ks]
        cells = "".join(f'<td class="num">{v:.2f}</td>' for v in values)
        cells += f'<td class="num">{sum(values) / len(values):.2f}</td>' if values else "<td></td>"
        if median:
            cells += f'<td class="num">{float(metrics[f"{prefix}_median_rank"]):g}</td>'
        rows.append(f"<tr><th>{label}</th>{cells}</tr>")
    notes = []
    if "mean_recall" in metrics:
        notes.append(f"mean recall {float(metrics['mean_recall']):.2f}")
    if "num_images" in metrics and "num_texts" in metrics:
        notes.append(f"{metrics['num_images']:,} images, {metrics['num_texts']:,} texts")
    if source:
        notes.append(f"from {source}")
    caption = f'<caption class="caption">{_e("; ".join(notes))}</caption>' if notes else ""
    return f'<table class="recall">{caption}<tr><th>direction</th>{head}</tr>{"".join(rows)}</table>'


def _settings(config: dict) -> str:
    rows = []
    for key, value in config.items():
        shown = "default" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append(f"<tr><th>{_e(key)}</th><td>{_e(shown)}</td></tr>")
    return f'<table class="settings">{"".join(rows)}</table>'


def _examples_html(examples, records, thumbs: dict[int, str]) -> str:
    blocks = []
    for n, ex in enumerate(examples, 1):
        gold = set(ex.gold)
        figures = []
        for rank, (index, score) in enumerate(ex.hits, 1):
            cls = "hit gold" if index in gold else "hit"
            label = f"#{rank} · {score:.3f}" + (" · gold" if index in gold else "")
            figures.append(
                f'<figure class="{cls}"><img src="{thumbs[index]}" alt="{_e(records[index].image_id)}">'
                f"<figcaption>{_e(label)}<br>{_e(_short(records[index].image_id))}</figcaption></figure>"
            )
        missing = _outside(ex)
        extra = ""
        if missing:
            golds = "".join(
                f'<figure class="hit gold"><img src="{thumbs[g]}" alt="{_e(records[g].image_id)}">'
                f"<figcaption>gold<br>{_e(_short(records[g].image_id))}</figcaption></figure>"
                for g in missing
            )
            extra = f'<div class="golds">Gold image{"s" if len(missing) > 1 else ""} outside the top {len(ex.hits)}:<div class="hits">{golds}</div></div>'
        meta = f"best gold image at rank {ex.gold_rank:,} of {ex.num_images:,}"
        blocks.append(
            f'<div class="example" id="example-{n}"><p class="query">{_e(ex.text)}<span class="meta">{_e(meta)}</span></p>'
            f'<div class="hits">{"".join(figures)}</div>{extra}</div>'
        )
    return "".join(blocks)


def _outside(example, limit: int = 3) -> list[int]:
    """Up to `limit` gold images of an example that are not among its hits."""
    shown = {i for i, _ in example.hits}
    return [g for g in example.gold if g not in shown][:limit]


def _short(text: str, limit: int = 24) -> str:
    text = os.path.basename(str(text)) or str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_page(run: RunRecord, curves: dict[str, bytes | None], examples_html: str, notes: list[str]) -> str:
    """The whole page as a string (no external resource: styles inline, images as data: URIs)."""
    from .. import __version__

    title = f"wenlan run report: {run.path.resolve().name}"
    recall = (
        recall_table_html(run.recall, run.recall_source)
        if run.recall
        else '<p class="note">No evaluation yet: the run has no recall.json and no evaluation line in metrics.jsonl.</p>'
    )
    note_html = "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    generated = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f'<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=\"sub\">Generated by wenlan {_e(__version__)} on {generated}.</p>"
        f'{note_html}<section id="summary"><h2>Summary</h2>{_summary(run)}</section>'
        f'<section id="curves"><h2>Curves</h2>{_curves(curves)}</section>'
        f'<section id="recall"><h2>Final recall</h2>{recall}</section>'
        f'<section id="examples"><h2>Retrieval examples</h2>{examples_html}</section>'
        f'<section id="settings"><h2>Settings (train_config.json)</h2>{_settings(run.config)}</section>'
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- the command


def _eval_records(run: RunRecord):
    from ..data.sources import load_records

    cfg = run.config
    split = cfg.get("eval_split") or "val"
    options = {k: cfg[k] for k in ("image_column", "text_column") if cfg.get(k)}
    synth = {k: cfg[f"synth_{k}"] for k in ("train", "val", "test", "seed") if isinstance(cfg.get(f"synth_{k}"), int)}
    dataset = cfg.get("dataset") or "synth"
    try:
        return split, load_records(dataset, cfg.get("data_dir"), split, synth=synth, **options)
    except DataError as exc:
        raise DataError(f"{str(exc).rstrip('.')} (the examples need the run's {split} split; pass --examples 0 to leave them out).") from None


def _ranked_examples_html(
    run: RunRecord, examples: int, top_k: int, *, device: str, batch_size: int, workers: int, thumbnail_size: int, say
) -> str:
    """The examples section: `examples` captions of the run's evaluation split, each with
    the images its checkpoint ranks first. The model is freed (and CUDA's cache emptied)
    before the thumbnails are made, so the page never holds both in memory."""
    import torch

    from ..loading import load_checkpoint
    from ..engine.device import pick_device
    from .examples import retrieval_examples, thumbnail_uri

    split, records = _eval_records(run)
    if not records:
        return f'<p class="note">The {_e(split)} split has no images.</p>'
    dev = pick_device(device)
    say(f"Ranking the {len(records):,} {split} images with {run.checkpoint} for {examples} caption(s)...")
    loaded = load_checkpoint(run.checkpoint, device=dev)
    found = retrieval_examples(loaded, records, examples, top_k, device=dev, batch_size=batch_size, workers=workers)
    del loaded
    if isinstance(dev, torch.device) and dev.type == "cuda":
        torch.cuda.empty_cache()
    needed = sorted({i for ex in found for i, _ in ex.hits} | {g for ex in found for g in _outside(ex)})
    thumbs = {i: thumbnail_uri(records[i], thumbnail_size) for i in needed}
    intro = (
        f'<p class="caption">{len(found)} caption(s) of the {_e(split)} split, each with the {min(top_k, len(records))} '
        f"images ranked first among all {len(records):,} by {_e(run.checkpoint)}; gold images are framed in green.</p>"
    )
    return intro + _examples_html(found, records, thumbs)


def write_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    examples: int = 5,
    top_k: int = 5,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    thumbnail_size: int = 128,
    log=None,
) -> Path:
    """Write the HTML report of a run directory and return its path.

    `output` defaults to ``RUN_DIR/report.html``. `examples` captions of the run's
    evaluation split (its train_config.json names dataset, data folder and split) are
    each shown with the `top_k` images the run's checkpoint (final, else the newest)
    retrieves among all images of the split; 0 leaves the examples out, and so does
    a run without a checkpoint yet (the page says so). Raises UsageError for a folder
    that is not a run or bad options, DataError for unreadable run files or data.
    """
    if examples < 0:
        raise UsageError(f"--examples must be 0 or more, not {examples}.")
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, not {top_k}.")
    run = read_run(run_dir)
    out = Path(output) if output is not None else run.path / "report.html"
    from ..output_paths import check_outputs, folder_input, run_input

    data_dir = run.config.get("data_dir") if examples else None
    check_outputs([("--output", out)], [*run_input("RUN_DIR", run.path),
                                        *folder_input("the run's --data-dir", data_dir if isinstance(data_dir, str) else None)])
    if out.exists() and out.is_dir():
        raise UsageError(f"--output {out} is a folder; give a file name such as report.html.")
    say = log or (lambda message: None)

    from .plots import loss_curve, lr_curve, recall_curve

    curves = {"loss": loss_curve(run.train), "lr": lr_curve(run.train), "recall": recall_curve(run.evals)}
    notes = list(run.notes)
    examples_html = ""
    if examples == 0:
        examples_html = '<p class="note">Left out (--examples 0).</p>'
    elif run.checkpoint is None:
        message = "The run has no checkpoint yet, so there are no retrieval examples."
        notes.append(message)
        say(message)
        examples_html = f'<p class="note">{_e(message)}</p>'
    else:
        examples_html = _ranked_examples_html(run, examples, top_k, device=device, batch_size=batch_size,
                                              workers=workers, thumbnail_size=thumbnail_size, say=say)
    page = render_page(run, curves, examples_html, notes)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, out)
    return out
