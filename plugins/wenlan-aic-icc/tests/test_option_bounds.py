"""finetune-caption's numeric options follow the core's rule: NaN, infinities and values
out of range are refused before any work, naming the option (exit 2)."""

from __future__ import annotations

import pytest

from wenlan_aic_icc.finetune import FinetuneConfig
from wenlan_cli.cli import main
from wenlan_cli.errors import UsageError

CASES = [("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "-1"), ("--epochs", "inf"),
         ("--max-time", "-1"), ("--workers", "-1"), ("--dropout", "1"), ("--d-model", "0"), ("--heads", "0"),
         ("--batch-size", "0"), ("--warmup", "-1"), ("--label-smoothing", "nan")]


@pytest.mark.parametrize("option, value", CASES, ids=[f"{o}={v}" for o, v in CASES])
def test_finetune_caption_refuses_out_of_bounds_options(capsys, tmp_path, option, value):
    code = main(["finetune-caption", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "o"), option, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {option} must be") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_the_rule_names_bound_and_value():
    with pytest.raises(UsageError, match=r"^--tower-lr must be a finite number above 0, not nan\.$"):
        FinetuneConfig(checkpoint="x", tower_lr=float("nan")).validate()
