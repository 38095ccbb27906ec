"""An image index is data from elsewhere: every path in index.json and its manifest must
resolve inside the index folder or the images folder, or the index is refused naming the
entry, before `search` lists a path or `--html` embeds a thumbnail of it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from wenlan_cli.cli import main
from wenlan_cli.errors import DataError
from wenlan_cli.search import build_index, load_index

TEST_IMAGES = Path("ai_challenger_caption_test_a_20180103") / "caption_test_a_images_20180103"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def built_once(tmp_path_factory, tiny_run, synth_dir):
    root = tmp_path_factory.mktemp("trust")
    photos = root / "photos"
    photos.mkdir()
    for i, src in enumerate(sorted((synth_dir / TEST_IMAGES).glob("*.jpg"))[:3]):
        shutil.copy(src, photos / f"p{i}.jpg")
    build_index(photos, root / "idx", tiny_run.out, workers=0)
    return root


@pytest.fixture
def index(built_once, tmp_path):
    """A fresh copy of a real index (and its images folder) to tamper with."""
    shutil.copytree(built_once / "photos", tmp_path / "photos")
    shutil.copytree(built_once / "idx", tmp_path / "idx")
    info = json.loads((tmp_path / "idx" / "index.json").read_text(encoding="utf-8"))
    info["images_dir"] = str((tmp_path / "photos").resolve())
    (tmp_path / "idx" / "index.json").write_text(json.dumps(info), encoding="utf-8")
    return tmp_path / "idx"


def edit_info(index: Path, **fields) -> None:
    info = json.loads((index / "index.json").read_text(encoding="utf-8"))
    info.update(fields)
    (index / "index.json").write_text(json.dumps(info), encoding="utf-8")


def edit_rows(index: Path, change) -> Path:
    info = json.loads((index / "index.json").read_text(encoding="utf-8"))
    manifest = index / info["manifest"]
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    change(rows)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def test_the_untampered_copy_loads(index):
    assert [row.path for row in load_index(index).rows] == ["p0.jpg", "p1.jpg", "p2.jpg"]


@pytest.mark.parametrize("field", ["manifest", "vectors"])
@pytest.mark.parametrize("value", ["/etc/passwd", "../other/manifest.jsonl", "sub/../../x.npy", ""])
def test_index_json_naming_a_file_outside_the_index_is_refused(index, field, value):
    edit_info(index, **{field: value})
    with pytest.raises(DataError, match=rf"index\.json field '{field}'"):
        load_index(index)


def test_index_json_naming_a_symlink_out_of_the_index_is_refused(index, tmp_path):
    info = json.loads((index / "index.json").read_text(encoding="utf-8"))
    outside = tmp_path / "elsewhere.jsonl"
    shutil.move(index / info["manifest"], outside)
    (index / info["manifest"]).symlink_to(outside)
    with pytest.raises(DataError, match=r"field 'manifest'.*symlink that resolves outside"):
        load_index(index)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.jpg", "sub/../../outside.jpg", "C:/x.jpg"])
def test_a_manifest_row_outside_the_images_folder_is_refused_naming_its_line(index, capsys, path):
    def tamper(rows):
        rows[1]["path"] = path

    manifest = edit_rows(index, tamper)
    with pytest.raises(DataError, match=rf"{manifest.name} line 2: the manifest path"):
        load_index(index)
    code, out, err = run_cli(capsys, "search", "红色", "--index", index, "--json")
    assert code == 1 and "line 2" in err and out == "" and "Traceback" not in err


def test_images_dir_must_be_an_absolute_folder_path(index):
    edit_info(index, images_dir="../photos")
    with pytest.raises(DataError, match="field 'images_dir' must be the absolute path"):
        load_index(index)


def test_a_row_that_is_a_symlink_out_of_the_images_folder_is_never_listed_or_embedded(index, tmp_path, capsys):
    secret = tmp_path / "private.jpg"
    shutil.copy(tmp_path / "photos" / "p1.jpg", secret)
    os.remove(tmp_path / "photos" / "p1.jpg")
    (tmp_path / "photos" / "p1.jpg").symlink_to(secret)
    page = tmp_path / "hits.html"
    code, out, err = run_cli(capsys, "search", "红色", "--index", index, "-k", "3", "--html", page, "--json")
    assert code == 1 and "row 2" in err and "symlink that resolves outside" in err
    assert out == "" and not page.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
