"""The example task plugin (examples/wenlan-zeroshot) proves the plugin surface: installed
from a copy, offline, into a folder of its own, it is listed by `wenlan plugins`, adds its
command through the task hook and gets the same accuracy as `wenlan classify --eval`."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from wenlan_cli.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "wenlan-zeroshot"
COLOURS = {"红色": (220, 30, 30), "绿色": (30, 200, 40), "蓝色": (30, 40, 220)}


def by_label(root: Path) -> Path:
    """Two images per colour label, each in the folder named after its label."""
    for i, (label, rgb) in enumerate(COLOURS.items()):
        (root / label).mkdir(parents=True)
        for j in range(2):
            image = Image.new("RGB", (48, 48), (255, 255, 255))
            image.paste(rgb, (8 * j, 8 * i, 8 * j + 32, 8 * i + 32))
            image.save(root / label / f"{j}.png")
    return root


def test_the_example_imports_only_the_plugin_surface_from_the_core():
    for path in sorted((EXAMPLE / "wenlan_zeroshot").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                assert name == "wenlan_cli.plugin_api" or not name.startswith("wenlan_cli"), f"{path.name} imports {name}"


@pytest.mark.slow
def test_the_example_plugin_installs_from_a_copy_and_matches_classify(tiny_run, tmp_path, capsys):
    copy, site = tmp_path / "copy", tmp_path / "site"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(copy)], check=True, capture_output=True, timeout=120)
    env = dict(os.environ, PYTHONPATH=str(site), HF_HUB_OFFLINE="1", COLUMNS="120")

    def wenlan(*args):
        return subprocess.run([sys.executable, "-m", "wenlan_cli", *map(str, args)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)

    listed = wenlan("plugins")
    assert listed.returncode == 0, listed.stderr
    assert "zeroshot" in listed.stdout and "wenlan-zeroshot" in listed.stdout and "zeroshot-accuracy" in listed.stdout
    assert "failed" not in listed.stderr

    data = by_label(tmp_path / "by-label")
    ran = wenlan("zeroshot-accuracy", "--checkpoint", tiny_run.out, data, "--json", "-", "--device", "cpu")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["images"] == 6 and report["labels"] == 3
    for key in ("top1", "top5", "mean_class_top1"):
        assert isinstance(report[key], float) and 0 <= report[key] <= 100, key
    assert report["top5"] == 100.0  # three labels: the gold one is always in the top five
    assert report["mean_class_top1"] == pytest.approx(sum(c["top1"] for c in report["per_class"]) / 3)

    code = main(["classify", str(data), "--checkpoint", str(tiny_run.out), "--eval", "--json", "-", "--device", "cpu"])
    core = json.loads(capsys.readouterr().out)
    assert code == 0
    for key in ("top1", "top5", "top1_correct", "top5_correct", "images", "per_class"):
        assert report[key] == core[key], key

    (data / "loose.png").write_bytes((data / "红色" / "0.png").read_bytes())
    bad = wenlan("zeroshot-accuracy", "--checkpoint", tiny_run.out, data)
    assert bad.returncode == 2 and "loose.png" in bad.stderr and "sub-folder" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
