"""See a training run: `wenlan report RUN_DIR` writes one self-contained HTML page
(curves, the final recall table, the settings, retrieval examples with thumbnails), and
`MetricsWriter` (engine/metrics.py, re-exported here) mirrors metrics.jsonl into
TensorBoard event files when tensorboard is installed.

Importing this package is cheap: matplotlib and the model are only loaded by
`write_report`.
"""

from __future__ import annotations

from .run import RunRecord, read_run
from ..engine.metrics import MetricsWriter

__all__ = ["MetricsWriter", "RunRecord", "read_run", "write_report"]


def write_report(run_dir, output=None, **options):
    """Write the HTML report of `run_dir`; see `wenlan_cli.report.page.write_report`."""
    from .page import write_report as _write_report

    return _write_report(run_dir, output, **options)
