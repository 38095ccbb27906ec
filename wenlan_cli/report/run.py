"""What a run directory holds, read and checked: settings, metrics lines, final recall."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.files import not_an_object, parse_json, read_json, read_text
from ..errors import CheckpointError, DataError, UsageError

__all__ = ["RunRecord", "read_run"]

RECALL_PREFIXES = ("i2t_r", "t2i_r")


@dataclass
class RunRecord:
    """A run directory (the ``--out`` of ``wenlan pretrain``) as the report sees it.

    `train` holds the metrics lines with a loss (step, loss, lr, pairs_per_s, ...),
    `evals` the evaluation lines (step, split, i2t_r1 ... mean_recall), both in file
    order. `recall` is the final recall table: recall.json, else the last evaluation
    line (`recall_source` says which), else None. `checkpoint` is the checkpoint the
    examples use (final, else the newest step), or None.
    """

    path: Path
    config: dict
    train: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    recall: dict | None = None
    recall_source: str | None = None
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def read_run(path: str | Path) -> RunRecord:
    """Read a run directory.

    Raises UsageError when `path` is missing, not a folder, or not a run directory (it
    needs train_config.json and metrics.jsonl; a checkpoint folder is named as such),
    and DataError naming the file and line for JSON that cannot be read. An incomplete
    last line of metrics.jsonl (a run killed mid-write) is skipped with a note.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"the run directory {path} does not exist.")
    if not path.is_dir():
        raise UsageError(f"{path} is a file, not a run directory (the --out folder of wenlan pretrain).")
    config_file, metrics_file = path / "train_config.json", path / "metrics.jsonl"
    if not config_file.is_file() or not metrics_file.is_file():
        missing = " and ".join(f.name for f in (config_file, metrics_file) if not f.is_file())
        hint = ""
        if _is_checkpoint(path):
            hint = f"; it is a checkpoint: pass the run directory that holds it ({path.parent})"
        raise UsageError(
            f"{path} is not a run directory: it has no {missing} (a run directory is the --out folder of "
            f"wenlan pretrain){hint}."
        )
    record = RunRecord(path=path, config=_read_config(config_file))
    for entry in _read_metrics(metrics_file, record.notes):
        if "split" in entry and any(k.startswith(RECALL_PREFIXES) for k in entry):
            record.evals.append(entry)
        elif "loss" in entry:
            record.train.append(entry)
    record.recall, record.recall_source = _final_recall(path / "recall.json", record.evals)
    try:
        from ..engine.checkpoint import resolve_checkpoint

        record.checkpoint = resolve_checkpoint(path)
    except CheckpointError:
        record.checkpoint = None
    return record


def _read_config(path: Path) -> dict:
    return read_json(path, expect=dict)


def _read_metrics(path: Path, notes: list[str]) -> list[dict]:
    lines = read_text(path).split("\n")
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = parse_json(line, f"{path} line {number}", one_line=True)
        except DataError:
            if number == len(lines):  # the last line, without its newline: cut short by a crash
                notes.append(f"The last line of {path.name} is incomplete (the run stopped while writing it) and was left out.")
                continue
            raise
        if not isinstance(entry, dict):
            raise not_an_object(f"{path} line {number}", entry)
        if not isinstance(entry.get("step"), int) or isinstance(entry.get("step"), bool):
            raise DataError(f"{path} line {number}: field 'step' is missing or not an integer.")
        entries.append(entry)
    return entries


def _final_recall(path: Path, evals: list[dict]) -> tuple[dict | None, str | None]:
    if path.is_file():
        data = read_json(path)
        if isinstance(data, dict) and any(k.startswith(RECALL_PREFIXES) for k in data):
            return data, path.name
    if evals:
        last = evals[-1]
        return last, f"metrics.jsonl, step {last['step']} ({last.get('split', '?')})"
    return None, None
