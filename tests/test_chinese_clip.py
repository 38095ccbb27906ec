"""Chinese-CLIP's benchmark layout (MUGE, Flickr30k-CN, COCO-CN): reading, lazy base64
images, clear errors, multi-gold recall, and eval-retrieval end to end."""

from __future__ import annotations

import base64
import io
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from wenlan_cli.cli import main
from wenlan_cli.data.chinese_clip import decode_base64, index_image_tsv, read_chinese_clip
from wenlan_cli.data.pipeline import ImageDataset, ImageSettings, load_record_image
from wenlan_cli.data.readers import read_split
from wenlan_cli.errors import DataError, UsageError
from wenlan_cli.eval.evaluate import query_table
from wenlan_cli.eval.retrieval import retrieval_metrics, retrieval_ranks

# ----------------------------------------------------------------------------- helpers

COLOURS = {"11": (255, 0, 0), "12": (0, 255, 0), "13": (0, 0, 255), "14": (250, 250, 0)}


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def b64(data: bytes, urlsafe: bool = False) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode("ascii")


def write_split(folder, split, images: dict[str, bytes | str], texts: list[dict | str], *, newline="\n"):
    """`{split}_imgs.tsv` (bytes are base64-encoded here; str goes in as written) and
    `{split}_texts.jsonl` (dicts are dumped; str lines go in as written)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{i}\t{b64(v) if isinstance(v, bytes) else v}" for i, v in images.items()]
    (folder / f"{split}_imgs.tsv").write_bytes((newline.join(lines) + newline).encode("utf-8"))
    rows = [json.dumps(t, ensure_ascii=False) if isinstance(t, dict) else t for t in texts]
    (folder / f"{split}_texts.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def small_benchmark(folder, split="valid", **kwargs):
    images = {k: encoded(Image.new("RGB", (20, 12), c)) for k, c in COLOURS.items()}
    texts = [
        {"text_id": 1, "text": "红色的方块", "image_ids": [11]},
        {"text_id": 2, "text": " 红色或绿色\n的方块 ", "image_ids": [11, 12]},
        {"text_id": 3, "text": "蓝色的方块", "image_ids": [13, 13]},  # a repeated id counts once
    ]  # image 14 is listed by no text: a distractor
    return write_split(folder, split, images, texts, **kwargs)


def data_error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- reading


def test_records_texts_and_lazy_images(tmp_path):
    folder = small_benchmark(tmp_path / "MUGE")
    records = read_split("muge", folder, "valid")
    assert [r.image_id for r in records] == ["11", "12", "13", "14"]  # TSV order, distractor kept
    assert [r.captions for r in records] == [["红色的方块", "红色或绿色的方块"], ["红色或绿色的方块"], ["蓝色的方块"], []]
    assert [r.meta["text_ids"] for r in records] == [["1", "2"], ["2"], ["3"], []]
    tsv = (folder / "valid_imgs.tsv").resolve()
    assert all(r.image_path == tsv for r in records)
    for record in records:
        copy = pickle.loads(pickle.dumps(record))  # what a DataLoader worker receives
        assert len(pickle.dumps(record.image_source)) < 400  # an offset, not the pixels
        image = load_record_image(copy)
        assert image.mode == "RGB" and image.size == (20, 12)
        assert image.getpixel((3, 3)) == COLOURS[record.image_id]
    # The training split drops images that form no pair.
    small_benchmark(tmp_path / "MUGE", split="train")
    assert [r.image_id for r in read_split("muge", folder, "train")] == ["11", "12", "13"]


def test_the_image_dataset_decodes_tsv_images(tmp_path):
    records = read_split("flickr30k-cn", small_benchmark(tmp_path / "f"), "valid")
    settings = ImageSettings(image_size=16, max_regions=4, grid_size=1, mean=(0.5,) * 3, std=(0.5,) * 3)
    index, pixels, boxes = ImageDataset(records, settings)[2]
    assert index == 2 and pixels.shape == (3, 16, 16) and pixels.dtype == torch.uint8
    assert pixels[:, 8, 8].tolist() == [0, 0, 255] and boxes.shape == (2, 4)


def test_query_table_counts_a_shared_text_once(tmp_path):
    records = read_split("coco-cn", small_benchmark(tmp_path / "c"), "valid")
    texts, gold = query_table(records)
    assert texts == ["红色的方块", "红色或绿色的方块", "蓝色的方块"]
    assert gold == [[0], [0, 1], [2]]


@pytest.mark.parametrize("where", ["direct", "named", "lowercase", "datapath"])
def test_the_dataset_folder_is_found(tmp_path, where):
    folder = {
        "direct": tmp_path,
        "named": tmp_path / "Flickr30k-CN",
        "lowercase": tmp_path / "flickr30k-cn",
        "datapath": tmp_path / "datasets" / "Flickr30k-CN",
    }[where]
    small_benchmark(folder)
    assert len(read_split("flickr30k-cn", tmp_path, "val")) == 4  # "val" means valid


def test_base64_variants_crlf_and_blank_lines(tmp_path):
    red = encoded(Image.new("RGB", (5, 5), (255, 0, 0)), "JPEG")
    # Find a payload whose URL-safe form differs from the standard one.
    quality = next(q for q in range(50, 100) if "/" in b64(encoded(Image.new("RGB", (9, 7), (9, 99, 199)), "JPEG", quality=q)))
    odd = encoded(Image.new("RGB", (9, 7), (9, 99, 199)), "JPEG", quality=quality)
    images = {"1": b64(red).rstrip("="), "2": b64(odd, urlsafe=True), "3": b64(odd)}
    texts = [{"text_id": i, "text": "字", "image_ids": [i]} for i in (1, 2, 3)]
    folder = write_split(tmp_path, "test", images, texts, newline="\r\n")
    with open(folder / "test_imgs.tsv", "ab") as handle:
        handle.write(b"\r\n\r\n")
    records = read_chinese_clip(folder, "test", "coco-cn")
    assert [r.image_source.read_bytes() for r in records] == [red, odd, odd]
    assert all(load_record_image(r).size in ((5, 5), (9, 7)) for r in records)


def test_safe_decoding_rules_apply_to_tsv_images(tmp_path):
    cmyk = encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = encoded(Image.fromarray(noise), "PNG")
    images = {"1": cmyk, "2": encoded(rgba), "3": full[: len(full) // 2], "4": b"not an image", "5": full,
              "6": "@@@@not-base64"}
    texts = [{"text_id": i, "text": "字", "image_ids": [i]} for i in range(1, 7)]
    records = read_split("muge", write_split(tmp_path, "valid", images, texts), "valid")  # nothing decoded yet
    red = load_record_image(records[0]).getpixel((4, 4))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60  # CMYK converted
    assert load_record_image(records[1]).getpixel((4, 4)) == (255, 255, 255)  # alpha on white
    tsv = str((tmp_path / "valid_imgs.tsv").resolve())
    for i, expected in ((2, "truncated"), (3, "not an image"), (5, "not valid base64")):
        message = data_error(load_record_image, records[i])
        assert f"{tsv} line {i + 1} (image_id {i + 1})" in message and expected in message
    message = data_error(records[4].image_source.load, max_pixels=100)
    assert "line 5" in message and "decompression bomb" in message
    assert "not valid base64" in data_error(decode_base64, b"abcde", "x")


def test_a_changed_tsv_is_detected(tmp_path):
    records = read_split("muge", small_benchmark(tmp_path), "valid")
    with open(tmp_path / "valid_imgs.tsv", "ab") as handle:
        handle.write(b"99\tAAAA\n")
    assert "changed after it was indexed" in data_error(load_record_image, records[0])


# ----------------------------------------------------------------------------- errors

IMG = "iVBORw0KGgo="  # any non-empty base64: the index does not decode


@pytest.mark.parametrize(
    "images, texts, expected",
    [
        ({"1": IMG}, ["{not json"], "valid_texts.jsonl line 1 is not valid JSON"),
        ({"1": IMG}, ['{"text_id": 1, "text": "a", "image_ids": [1]}', "[1, 2]"], "valid_texts.jsonl line 2 holds a list; expected a JSON object"),
        ({"1": IMG}, [{"text_id": 1, "image_ids": [1]}], "line 1: field 'text' is missing"),
        ({"1": IMG}, [{"text_id": 1.5, "text": "a", "image_ids": [1]}], "line 1: field 'text_id' must be an integer"),
        ({"1": IMG}, [{"text_id": 1, "text": "  ", "image_ids": [1]}], "line 1 (text_id 1): field 'text' is empty"),
        ({"1": IMG}, [{"text_id": 1, "text": "a", "image_ids": 1}], "field 'image_ids' must be a list"),
        ({"1": IMG}, [{"text_id": 1, "text": "a", "image_ids": [True]}], "image_ids[0] must be an integer"),
        ({"1": IMG}, [{"text_id": 7, "text": "a", "image_ids": [1]}, "", {"text_id": 7, "text": "b", "image_ids": [1]}],
         "valid_texts.jsonl line 3 (text_id 7): text_id 7 appears again (first on line 1)"),
        ({"1": IMG}, [{"text_id": 1, "text": "a", "image_ids": [1, 5]}],
         "valid_texts.jsonl line 1: text_id 1 refers to image_id '5', which is not in"),
        ({"1": IMG}, [{"text_id": 1, "text": "a", "image_ids": [1]}, {"text_id": 2, "text": "b", "image_ids": []}],
         "valid_texts.jsonl line 2: text_id 2 lists no images"),
        ({"1": IMG, "2": IMG, " 1": IMG}, [{"text_id": 1, "text": "a", "image_ids": [1]}],
         "valid_imgs.tsv line 3: image_id '1' appears again (first on line 1)"),
        ({"1": IMG, "2\tx": IMG}, [{"text_id": 1, "text": "a", "image_ids": [1]}], "valid_imgs.tsv line 2: expected two tab-separated fields"),
        ({"": IMG}, [{"text_id": 1, "text": "a", "image_ids": [1]}], "valid_imgs.tsv line 1: the image id before the tab is empty"),
        ({"1": ""}, [{"text_id": 1, "text": "a", "image_ids": [1]}], "valid_imgs.tsv line 1 (image_id '1'): there is no image data"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, images, texts, expected):
    write_split(tmp_path, "valid", images, texts)
    assert expected in data_error(read_split, "flickr30k-cn", tmp_path, "valid")


def test_a_line_without_a_tab_and_non_utf8_texts(tmp_path):
    write_split(tmp_path, "valid", {"1": IMG}, [{"text_id": 1, "text": "a", "image_ids": [1]}])
    (tmp_path / "valid_imgs.tsv").write_bytes(b"1\t" + IMG.encode() + b"\n2 " + IMG.encode() + b"\n")
    assert "valid_imgs.tsv line 2: expected 'image_id<TAB>base64', but the line has no tab" in data_error(
        read_split, "coco-cn", tmp_path, "valid")
    (tmp_path / "valid_texts.jsonl").write_bytes(b'{"text_id": 1, "text": "a", "image_ids": [1]}\n{"text": "\xff"}\n')
    assert "valid_texts.jsonl line 2 is not valid UTF-8" in data_error(read_split, "coco-cn", tmp_path, "valid")


def test_muge_test_split_has_no_public_gold(tmp_path):
    write_split(tmp_path, "test", {"1": IMG}, [{"text_id": 1, "text": "a", "image_ids": []}])
    message = data_error(read_split, "muge", tmp_path, "test")
    assert "test_texts.jsonl" in message and "without their gold images" in message and "--split valid" in message
    assert "no text lists its images" in data_error(read_split, "coco-cn", tmp_path, "test")


def test_missing_files_and_unknown_split(tmp_path):
    small_benchmark(tmp_path)
    (tmp_path / "valid_imgs.tsv").unlink()
    assert "holds valid_texts.jsonl but not valid_imgs.tsv" in data_error(read_split, "muge", tmp_path, "valid")
    message = data_error(read_split, "muge", tmp_path, "test")
    assert "no MUGE test split" in message and "splits there: valid" in message and "leaderboard" in message
    assert "leaderboard" not in data_error(read_split, "coco-cn", tmp_path, "test")
    with pytest.raises(UsageError, match="unknown MUGE split 'dev2'; choose one of: train, valid, test"):
        read_split("muge", tmp_path, "dev2")
    (tmp_path / "empty.tsv").write_bytes(b"")
    assert "is empty" in data_error(index_image_tsv, tmp_path / "empty.tsv")


# ----------------------------------------------------------------------------- multi-gold recall


def brute_force_set_ranks(queries, candidates, gold_sets):
    """Full score matrix, stable descending sort, position of the first gold (-1: none)."""
    order = torch.sort(queries.float() @ candidates.float().T, dim=1, descending=True, stable=True).indices
    ranks = []
    for q, golds in enumerate(gold_sets):
        hits = [p for p, c in enumerate(order[q].tolist()) if c in set(golds)]
        ranks.append(hits[0] if hits else -1)
    return torch.tensor(ranks)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_multi_gold_ranks_match_brute_force(seed, chunk):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(-2, 3, (17, 5), generator=g).float()  # small integers: exact scores, many ties
    texts = torch.randint(-2, 3, (23, 5), generator=g).float()
    sets = [torch.randperm(17, generator=g)[: int(torch.randint(0, 4, (1,), generator=g))].tolist() for _ in range(23)]
    sets[0] = [3, 3, 16]
    t2i, i2t = retrieval_ranks(images, texts, sets, chunk_size=chunk)
    texts_of = [[t for t, s in enumerate(sets) if i in s] for i in range(17)]
    assert t2i.tolist() == brute_force_set_ranks(texts, images, sets).tolist()
    assert i2t.tolist() == brute_force_set_ranks(images, texts, texts_of).tolist()


def test_one_gold_per_text_in_set_form_equals_the_plain_form():
    g = torch.Generator().manual_seed(3)
    images, texts = torch.randn(9, 4, generator=g), torch.randn(20, 4, generator=g)
    gold = torch.randint(0, 9, (20,), generator=g)
    plain = retrieval_metrics(images, texts, gold, chunk_size=4)
    as_sets = retrieval_metrics(images, texts, [[int(i)] for i in gold], chunk_size=4)
    assert as_sets == plain
    assert retrieval_metrics(images, texts, [int(i) for i in gold[:-1]] + [[int(gold[-1])]]) == plain


def test_multi_gold_recall_by_hand():
    images = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    gold = [[1], [0, 2], [2], [0, 1]]
    # text->image: T0 sees I0 2, I2 1, I1 0 -> gold I1 at 2; T1 sees I1, I2, I0 -> first gold I2 at 1;
    #              T2 ties all three at 2 -> index order, I2 at 2; T3 sees I1 0, I2 -1, I0 -2 -> I1 at 0.
    # image->text: I0 (texts T1, T3) sees T0 2, T2 2, T1 0, T3 -2 -> T1 at 2;
    #              I1 (T0, T3) sees T1 2, T2 2, T0 0, T3 0 -> T0 at 2; I2 (T1, T2) sees T2 2 first -> 0.
    t2i, i2t = retrieval_ranks(images, texts, gold)
    assert t2i.tolist() == [2, 1, 2, 0] and i2t.tolist() == [2, 2, 0]
    metrics = retrieval_metrics(images, texts, gold, ks=(1, 2, 3))
    assert metrics["t2i_r1"] == 25.0 and metrics["t2i_r2"] == 50.0 and metrics["t2i_r3"] == 100.0
    assert metrics["i2t_r1"] == pytest.approx(100 / 3) and metrics["i2t_r3"] == 100.0
    assert metrics["num_images"] == 3 and metrics["num_texts"] == 4


@pytest.mark.parametrize(
    "gold, message",
    [
        ([[0], [5]], "image index 5, outside [0, 3)"),
        ([[0], [1.0]], "must hold integer image indices"),
        ([[], []], "no text has a gold image"),
        ([[0]], "got 1 sets for the 2 rows"),
    ],
)
def test_multi_gold_bad_inputs(gold, message):
    with pytest.raises(ValueError) as info:
        retrieval_ranks(torch.eye(3), torch.eye(3)[:2], gold)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- end to end


def chinese_clip_recall(image_emb, text_emb, text_gold, ks=(1, 5, 10), tie=1e-5):
    """Recall as Chinese-CLIP's evaluation scripts count it: a hit when any gold id is among
    the first K (text->image), and image->text over the images some text lists, with the
    texts listing them as gold. Returns (lowest, highest) per metric: a score within `tie`
    of the best gold's may rank either side of it, since vectors encoded in other batch
    sizes differ in the last float bits (a 6-step model's scores lie within ~0.005)."""
    scores = (text_emb @ image_emb.T).astype(np.float64)

    def hit_bounds(row, gold, k):
        best = max(row[g] for g in gold)
        others = np.delete(row, list(gold))
        return int(np.sum(others >= best - tie)) < k, int(np.sum(others > best + tie)) < k

    listed = sorted({i for g in text_gold for i in g})
    image_gold = {i: [t for t, g in enumerate(text_gold) if i in g] for i in listed}
    out = {}
    for k in ks:
        t2i = np.array([hit_bounds(scores[t], g, k) for t, g in enumerate(text_gold)])
        i2t = np.array([hit_bounds(scores[:, i], image_gold[i], k) for i in listed])
        out[f"t2i_r{k}"] = tuple(100.0 * t2i.mean(axis=0))
        out[f"i2t_r{k}"] = tuple(100.0 * i2t.mean(axis=0))
    return out


def test_eval_retrieval_end_to_end_on_a_multi_gold_benchmark(capsys, tiny_run, synth_dir, tmp_path):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.encode import encode_images, encode_texts
    from wenlan_cli.loading import load_checkpoint

    source = load_records("aic-icc", synth_dir, "val")[:12]
    images = {str(1000 + i): r.image_path.read_bytes() for i, r in enumerate(source)}
    texts, next_id = [], 500
    for i, record in enumerate(source):
        for caption in record.captions[:2]:
            texts.append({"text_id": next_id, "text": caption, "image_ids": [1000 + i]})
            next_id += 1
    for i in range(0, 12, 3):  # texts with two gold images, as in MUGE
        texts.append({"text_id": next_id, "text": source[i].captions[2], "image_ids": [1000 + i, 1000 + i + 1]})
        next_id += 1
    folder = write_split(tmp_path / "data" / "MUGE", "valid", images, texts)
    write_split(folder, "test", {"1": IMG}, [{"text_id": 1, "text": "字", "image_ids": []}])

    out = tmp_path / "recall.json"
    code = main(["eval-retrieval", "--checkpoint", str(tiny_run.out), "--dataset", "muge", "--data-dir", str(tmp_path / "data"),
                 "--split", "valid", "--output", str(out), "--workers", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "12 images / 28 texts" in " ".join(captured.err.split()) and "R@1" in captured.out
    metrics = json.loads(out.read_text())
    assert metrics["num_images"] == 12 and metrics["num_texts"] == 28 and metrics["split"] == "valid"

    # Independently: embeddings of the decoded TSV images and of the texts, counted by Chinese-CLIP's rule.
    loaded = load_checkpoint(tiny_run.out)
    records = read_split("muge", folder, "valid")
    image_emb = encode_images(loaded.model, records, loaded.settings, device=torch.device("cpu")).embeddings.numpy()
    text_emb = encode_texts(loaded.model, loaded.tokenizer, [t["text"] for t in texts], device=torch.device("cpu"),
                            max_length=loaded.config.text.max_length).numpy()
    text_gold = [[int(i) - 1000 for i in t["image_ids"]] for t in texts]
    expected = chinese_clip_recall(image_emb, text_emb, text_gold)
    for key, (lowest, highest) in expected.items():
        assert lowest - 1e-9 <= metrics[key] <= highest + 1e-9, (key, metrics[key], lowest, highest)

    code = main(["eval-retrieval", "--checkpoint", str(tiny_run.out), "--dataset", "muge", "--data-dir", str(folder),
                 "--split", "test"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "test_texts.jsonl" in err and "leaderboard" in err


def test_pretrain_reads_tsv_images(tiny_config, synth_dir, tmp_path):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.train.loop import Pretrainer

    source = load_records("aic-icc", synth_dir, "val")
    folder = tmp_path / "data" / "Flickr30k-CN"
    for split, chosen in (("train", source[:16]), ("valid", source[16:])):
        images = {str(i): r.image_path.read_bytes() for i, r in enumerate(chosen)}
        texts = [{"text_id": 100 * i + j, "text": c, "image_ids": [i]} for i, r in enumerate(chosen) for j, c in enumerate(r.captions)]
        write_split(folder, split, images, texts)
    config = tiny_config(tmp_path / "run", tmp_path / "data", dataset="flickr30k-cn", steps=2, batch_size=8, queue_size=16, log_every=1)
    result = Pretrainer(config).run()
    assert result.step == 2 and result.metrics["num_images"] == 8 and result.metrics["num_texts"] == 40
    # The run report's thumbnails come out of the TSV too.
    from wenlan_cli.report import write_report

    page = write_report(result.out, examples=2, top_k=3, device="cpu").read_text(encoding="utf-8")
    assert page.count('class="example"') == 2 and page.count("data:image/jpeg;base64,") >= 6


def test_records_are_held_as_columns_and_built_as_the_reader_always_gave_them(tmp_path):
    """A split is a RecordTable (no Python object per record); each record it builds has the
    captions, text ids, TSV line and TsvImage the reader gave before, also after pickling."""
    from wenlan_cli.data.chinese_clip import TsvImage
    from wenlan_cli.data.table import RecordTable

    folder = small_benchmark(tmp_path / "b")
    records = read_chinese_clip(folder, "valid", "flickr30k-cn")
    assert isinstance(records, RecordTable) and len(records) == 4
    index = index_image_tsv(folder / "valid_imgs.tsv")
    for record in (records, pickle.loads(pickle.dumps(records))):
        got = [(r.image_id, r.captions, r.meta, r.image_source, r.image_path) for r in record]
        assert got == [
            ("11", ["红色的方块", "红色或绿色的方块"], {"text_ids": ["1", "2"], "line": 1}, index["11"], folder.resolve() / "valid_imgs.tsv"),
            ("12", ["红色或绿色的方块"], {"text_ids": ["2"], "line": 2}, index["12"], folder.resolve() / "valid_imgs.tsv"),
            ("13", ["蓝色的方块"], {"text_ids": ["3"], "line": 3}, index["13"], folder.resolve() / "valid_imgs.tsv"),
            ("14", [], {"text_ids": [], "line": 4}, index["14"], folder.resolve() / "valid_imgs.tsv"),
        ]
    assert isinstance(records[2].image_source, TsvImage) and records[2].image_source.load().size == (20, 12)
