"""`wenlan report`: a self-contained HTML page of a run, clear errors, and the optional
TensorBoard mirror of metrics.jsonl."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
import types
import warnings

import pytest

from wenlan_cli.cli import main
from wenlan_cli.report import MetricsWriter, read_run, write_report

ATTRIBUTE = re.compile(r"""\b(src|href|srcset|action|poster|data)\s*=\s*["']?([^"'\s>]*)""", re.IGNORECASE)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_self_contained(page: str) -> None:
    for name, value in ATTRIBUTE.findall(page):
        assert value.startswith("data:"), f"{name}={value[:40]} points outside the page"
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "url(" not in lowered and "@import" not in lowered


def png_uris(page: str, figure_id: str) -> bytes:
    match = re.search(rf'id="{figure_id}"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match, f"no PNG for {figure_id}"
    data = base64.b64decode(match.group(1))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return data


def fake_run(tmp_path, lines: list[str], recall: dict | None = None):
    """A run directory without a checkpoint: train_config.json, metrics.jsonl (and recall.json)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps({"model": "brivl-tiny", "dataset": "synth", "data_dir": None,
                                                      "steps": 40, "lr": 0.001}), encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(lines), encoding="utf-8")
    if recall is not None:
        (run / "recall.json").write_text(json.dumps(recall), encoding="utf-8")
    return run


def eval_line(step: int, value: float) -> str:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
    entry = {"step": step, "split": "val", **{k: value + i for i, k in enumerate(keys)}, "mean_recall": value + 2.5,
             "i2t_median_rank": 3.0, "t2i_median_rank": 4.0, "num_images": 24, "num_texts": 120}
    return json.dumps(entry) + "\n"


def train_line(step: int) -> str:
    return json.dumps({"step": step, "loss": 8.0 - step / 10, "lr": 1e-3 * (1 - step / 50), "pairs_per_s": 100.0 + step,
                       "skipped_images": 0, "time": step * 0.5}) + "\n"


# ----------------------------------------------------------------------------- the page


def test_report_of_a_trained_run(capsys, tiny_run, tmp_path):
    out = tmp_path / "pages" / "report.html"
    code, _, err = run_cli(capsys, "report", tiny_run.out, "-o", out, "--examples", 3, "--top-k", 4, "--device", "cpu")
    assert code == 0, err
    assert f"Wrote {out}" in err
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    for curve in ("loss-curve", "lr-curve", "recall-curve"):
        png_uris(page, curve)
    # The final recall table holds recall.json's numbers.
    recall = json.loads((tiny_run.out / "recall.json").read_text())
    table = re.search(r'<table class="recall">.*?</table>', page, re.S).group(0)
    assert "from recall.json" in table and "R@10" in table
    for key in ("t2i_r1", "t2i_r10", "i2t_r5"):
        assert f"<td class=\"num\">{recall[key]:.2f}</td>" in table
    # Three example captions, each with four thumbnails ranked by score.
    blocks = re.findall(r'<div class="example" id="example-\d+">(.*?)</div></div>(?=<div class="example"|</section>)', page, re.S)
    assert len(blocks) == 3 and page.count('class="example"') == 3
    for block in blocks:
        # (a block without a golds section ends inside its hits div: the split above ate its </div>)
        hits = re.search(r'<div class="hits">(.*?)(?:</div>|\Z)', block, re.S).group(1)
        assert hits.count("<figure") == 4 and hits.count("data:image/jpeg;base64,") == 4
        scores = [float(s) for s in re.findall(r"#\d+ · (-?[\d.]+)", hits)]
        assert scores == sorted(scores, reverse=True)
        rank = int(re.search(r"best gold image at rank (\d+) of 24", block).group(1))
        assert (rank <= 4) == ('class="hit gold"' in hits)
    # The settings come from train_config.json.
    settings = re.search(r'<table class="settings">.*?</table>', page, re.S).group(0)
    assert "<th>batch_size</th><td>16</td>" in settings and "<th>queue_size</th><td>64</td>" in settings


def test_report_from_metrics_alone(tmp_path):
    lines = [train_line(s) for s in range(1, 41)] + [eval_line(10, 10.0), eval_line(20, 20.0), eval_line(40, 30.0)]
    run = fake_run(tmp_path, lines + ['{"step": 41, "loss": 3.'])  # the last line was cut short by a crash
    out = write_report(run)  # no checkpoint: the examples are left out and the page says why
    assert out == run / "report.html"
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    for curve in ("loss-curve", "lr-curve", "recall-curve"):
        png_uris(page, curve)
    assert "from metrics.jsonl, step 40 (val)" in page and "<td class=\"num\">30.00</td>" in page
    assert "no checkpoint yet" in page and "last line of metrics.jsonl is incomplete" in page
    assert 'class="example"' not in page
    record = read_run(run)
    assert [e["step"] for e in record.evals] == [10, 20, 40] and len(record.train) == 40


def test_report_of_a_run_that_has_not_logged_yet(tmp_path):
    run = fake_run(tmp_path, [])
    page = write_report(run, tmp_path / "r.html", examples=0).read_text(encoding="utf-8")
    assert "No training lines in metrics.jsonl yet" in page and "No evaluation yet" in page
    assert_self_contained(page)


@pytest.mark.parametrize(
    "case, code, expected",
    [
        ("missing", 2, "does not exist"),
        ("file", 2, "is a file, not a run directory"),
        ("empty", 2, "is not a run directory: it has no train_config.json and metrics.jsonl"),
        ("checkpoint", 2, "it is a checkpoint: pass the run directory that holds it"),
        ("bad_metrics", 1, "metrics.jsonl line 2 is not valid JSON"),
        ("no_step", 1, "metrics.jsonl line 1: field 'step' is missing"),
        ("bad_config", 1, "train_config.json is not valid JSON"),
        ("bad_option", 2, "--examples must be 0 or more"),
    ],
)
def test_report_errors(capsys, tiny_run, tmp_path, case, code, expected):
    target = tmp_path / "run"
    extra = []
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
    elif case == "checkpoint":
        target = tiny_run.out / "final"
    elif case == "bad_metrics":
        target = fake_run(tmp_path, [train_line(1), "{oops\n", train_line(2)])
    elif case == "no_step":
        target = fake_run(tmp_path, ['{"loss": 1.0}\n'])
    elif case == "bad_config":
        target = fake_run(tmp_path, [train_line(1)])
        (target / "train_config.json").write_text("{", encoding="utf-8")
    elif case == "bad_option":
        target = fake_run(tmp_path, [train_line(1)])
        extra = ["--examples", "-1"]
    got, _, err = run_cli(capsys, "report", target, *extra)
    assert got == code and expected in err, err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_examples_need_the_data_and_say_how_to_skip_them(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.out, run)
    config = json.loads((run / "train_config.json").read_text())
    config.update(dataset="aic-icc", data_dir=str(tmp_path / "moved"))
    (run / "train_config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "report", run)
    assert code == 1 and "moved" in err and "--examples 0" in err
    code, _, err = run_cli(capsys, "report", run, "--examples", "0")
    assert code == 0 and (run / "report.html").is_file()


# ----------------------------------------------------------------------------- TensorBoard


class FakeSummaryWriter:
    instances: list["FakeSummaryWriter"] = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.purge_step, self.scalars, self.flushes, self.closed = log_dir, purge_step, [], 0, False
        FakeSummaryWriter.instances.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


def test_metrics_writer_mirrors_every_line(monkeypatch, tiny_run):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeSummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    FakeSummaryWriter.instances.clear()
    lines = [json.loads(x) for x in (tiny_run.out / "metrics.jsonl").read_text().splitlines()]
    with MetricsWriter(tiny_run.out) as writer:
        for entry in lines:
            writer.write(entry)
        assert writer.active
    (tb,) = FakeSummaryWriter.instances
    assert tb.log_dir == str(tiny_run.out) and tb.closed and tb.flushes == len(lines)
    train = [e for e in lines if "loss" in e]
    assert [(s, v) for t, v, s in tb.scalars if t == "train/loss"] == [(e["step"], e["loss"]) for e in train]
    final = [e for e in lines if "split" in e][-1]
    assert ("val/mean_recall", final["mean_recall"], final["step"]) in tb.scalars
    assert {t for t, _, _ in tb.scalars} >= {"train/lr", "train/pairs_per_s", "val/t2i_r1", "val/i2t_r10"}
    assert not any(t.endswith(("/step", "/split")) for t, _, _ in tb.scalars)
    assert tb.purge_step is None


def test_a_resumed_run_purges_the_events_it_replays(monkeypatch, tmp_path):
    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeSummaryWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    FakeSummaryWriter.instances.clear()
    writer = MetricsWriter(tmp_path)
    writer.purge_step = 301  # resumed from the step-300 checkpoint
    writer.write({"step": 310, "loss": 1.0})
    assert FakeSummaryWriter.instances[0].purge_step == 301


def test_metrics_writer_is_a_no_op_without_tensorboard(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    writer = MetricsWriter(tmp_path / "run")
    writer.write({"step": 1, "loss": 2.0})
    writer.close()
    assert not writer.active and not (tmp_path / "run").exists()
    assert not MetricsWriter(tmp_path, enabled=False).active


def test_a_broken_tensorboard_warns_once_and_never_raises(monkeypatch, tmp_path):
    class Broken(FakeSummaryWriter):
        def add_scalar(self, tag, value, step):
            raise OSError("No space left on device")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Broken
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    writer = MetricsWriter(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer.write({"step": 1, "loss": 2.0})
        writer.write({"step": 2, "loss": 1.0})
    assert len(caught) == 1 and "No space left" in str(caught[0].message)


def test_without_matplotlib_the_report_says_it_is_a_missing_dependency(capsys, monkeypatch, tmp_path):
    # matplotlib is a core dependency (pyproject.toml), so the message asks to restore it, not to add an extra.
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    run = fake_run(tmp_path, [train_line(s) for s in range(1, 11)])
    code, _, err = run_cli(capsys, "report", run, "--examples", 0)
    assert code == 1 and not (run / "report.html").exists()
    assert "matplotlib, a dependency of wenlan that is missing from this environment: pip install 'matplotlib>=3.7'." in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
