"""`wenlan serve`: every route and limit through FastAPI's TestClient, token auth, the
images-folder boundary, atomic reloads during requests, the micro-batcher, the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="wenlan serve needs the serve extra (fastapi)")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from wenlan_cli.cli import main  # noqa: E402
from wenlan_cli.search import Searcher, build_index, load_index, update_index  # noqa: E402
from wenlan_cli.serve import LiveIndex, MicroBatcher, ServeSettings, create_app, image_id  # noqa: E402
from wenlan_cli.serve.batching import BatcherBusy  # noqa: E402
from wenlan_cli.serve.engine import TextJob, run_batch  # noqa: E402
from wenlan_cli.serve.security import file_inside  # noqa: E402


def split_records(synth_dir):
    from wenlan_cli.data.sources import load_records

    return load_records("synth", str(synth_dir), "test")


def copy_images(records, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        shutil.copy(record.image_path, folder / record.image_path.name)
    return folder


@pytest.fixture(scope="module")
def served(tiny_run, synth_dir, tmp_path_factory):
    """An index of the synthetic test split (8 images) and its LiveIndex, shared by the module."""
    root = tmp_path_factory.mktemp("serve")
    records = split_records(synth_dir)
    images = copy_images(records, root / "photos")
    build_index(images, root / "idx", tiny_run.out, workers=0, device="cpu")
    live = LiveIndex(root / "idx", device="cpu")
    return {"root": root, "images": images, "index": root / "idx", "live": live, "records": records,
            "searcher": Searcher(load_index(root / "idx"), device="cpu")}


def client_for(served, **options) -> TestClient:
    settings = ServeSettings(index=served["index"], device="cpu", reload_interval=0, **options)
    return TestClient(create_app(settings, live=served["live"]))


def assert_refusal(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    sentence = body["error"]
    assert sentence.endswith(".") and "\n" not in sentence and len(sentence) < 300
    for word in words:
        assert word in sentence
    return sentence


def jpeg_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


# --------------------------------------------------------------------------- routes


def test_text_search_answers_what_the_library_finds(served):
    query = served["records"][0].captions[0]
    with client_for(served) as client:
        response = client.get("/search", params={"q": query, "k": 5})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = served["searcher"].search(texts=[query], k=5)[0].hits
    assert answer["query"] == query and answer["kind"] == "text" and answer["k"] == 5 and answer["images"] == 8
    assert [hit["path"] for hit in answer["results"]] == [hit.path for hit in expected]
    np.testing.assert_allclose([hit["score"] for hit in answer["results"]], [hit.score for hit in expected], atol=1e-5)
    for rank, hit in enumerate(answer["results"], 1):
        assert hit["rank"] == rank and hit["id"] == image_id(hit["path"]) and hit["thumbnail"] == f"/images/{hit['id']}"
    assert str(served["images"].resolve()) not in response.text and str(served["root"]) not in response.text


def test_image_upload_answers_what_wenlan_search_image_finds(served):
    photo = served["images"] / served["records"][3].image_path.name
    with client_for(served) as client:
        response = client.post("/search/image", params={"k": 3},
                               files={"file": ("q.jpg", jpeg_bytes(photo), "image/jpeg")})
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = served["searcher"].search(images=[photo], k=3)[0].hits
    assert answer["kind"] == "image" and [h["path"] for h in answer["results"]] == [h.path for h in expected]
    np.testing.assert_allclose([h["score"] for h in answer["results"]], [h.score for h in expected], atol=1e-5)
    assert answer["results"][0]["path"] == photo.name and answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_png_and_webp_uploads_are_accepted(served):
    image = Image.open(served["images"] / served["records"][1].image_path.name)
    with client_for(served) as client:
        for fmt in ("PNG", "WEBP", "BMP"):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt)
            response = client.post("/search/image?k=1", files={"file": ("q", buffer.getvalue(), "application/octet-stream")})
            assert response.status_code == 200, (fmt, response.text)
            assert len(response.json()["results"]) == 1


def test_thumbnails_are_small_jpegs_of_indexed_images(served):
    name = served["records"][2].image_path.name
    with client_for(served) as client:
        response = client.get(f"/images/{image_id(name)}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(response.content))
        assert thumb.format == "JPEG" and max(thumb.size) <= 256
        original = Image.open(served["images"] / name)
        assert thumb.size[0] / thumb.size[1] == pytest.approx(original.size[0] / original.size[1], rel=0.05)
        assert_refusal(client.get("/images/0123456789abcdef"), 404, "0123456789abcdef")
        assert_refusal(client.get("/images/not-an-id"), 404)


def test_healthz_reports_size_generation_and_checkpoint(served, tiny_run):
    with client_for(served) as client:
        health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["images"] == 8 and health["dim"] == 256
    info = json.loads((served["index"] / "index.json").read_text(encoding="utf-8"))
    assert health["generation"] == info["vectors"] and health["reload_error"] is None
    assert health["checkpoint"]["sha256"] == info["checkpoint"]["model_sha256"][:12]
    assert health["checkpoint"]["model"] == "brivl-tiny"
    assert "/" not in health["checkpoint"]["name"]  # a name, not a path of the server


def test_page_and_its_static_files_need_no_network(served):
    with client_for(served) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for element in ('id="q"', 'id="file"', 'id="results"', 'id="info"', 'lang="zh-CN"', "以文搜图"):
            assert element in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        texts = [page.text]
        for name, kind in (("app.js", "javascript"), ("style.css", "css")):
            response = client.get(f"/static/{name}")
            assert response.status_code == 200 and kind in response.headers["content-type"]
            texts.append(response.text)
        for text in texts:
            assert "http://" not in text and "https://" not in text and "//cdn" not in text
        assert_refusal(client.get("/static/../app.py"), 404)
        assert_refusal(client.get("/static/secret.txt"), 404, "secret.txt")
        assert client.get("/docs").status_code == 404  # no Swagger UI (it loads from a CDN)


# --------------------------------------------------------------------------- limits


def test_text_query_limits_are_4xx_sentences(served):
    with client_for(served, max_query_chars=10, max_k=7) as client:
        assert_refusal(client.get("/search"), 400, "q")
        assert_refusal(client.get("/search", params={"q": "   "}), 400, "q")
        assert_refusal(client.get("/search", params={"q": "红" * 11}), 400, "11 characters", "10")
        assert client.get("/search", params={"q": "红" * 10}).status_code == 200
        for bad in ("0", "8", "-1", "abc", "2.5"):
            assert_refusal(client.get("/search", params={"q": "红色", "k": bad}), 400, "k must be", "7")
        assert len(client.get("/search", params={"q": "红色"}).json()["results"]) == 7  # default k capped by max_k
        assert_refusal(client.get("/nowhere"), 404, "/nowhere")
        assert_refusal(client.delete("/search"), 405, "DELETE")


def test_upload_limits_are_4xx_sentences(served):
    photo = jpeg_bytes(served["images"] / served["records"][0].image_path.name)
    with client_for(served, max_upload_bytes=len(photo) + 10) as client:
        post = client.post
        big = photo + b"\0" * 100
        assert_refusal(post("/search/image", files={"file": ("a.jpg", big, "image/jpeg")}), 413, str(len(big)))
        huge = b"\xff\xd8\xff" + b"\0" * (len(photo) + 64 * 1024)  # refused by its Content-Length
        assert_refusal(post("/search/image", files={"file": ("a.jpg", huge, "image/jpeg")}), 413)
        assert_refusal(post("/search/image", content=photo, headers={"content-type": "image/jpeg"}), 415, "multipart")
        assert_refusal(post("/search/image", files={"file": ("a.jpg", b"GIF89a....", "image/jpeg")}), 415, "JPEG, PNG")
        assert_refusal(post("/search/image", files={"file": ("a.txt", "你好".encode(), "text/plain")}), 415)
        assert_refusal(post("/search/image", files={"file": ("a.jpg", b"", "image/jpeg")}), 400, "empty")
        assert_refusal(post("/search/image", files={"other": ("a.jpg", photo, "image/jpeg")}), 400, "file")
        assert_refusal(post("/search/image", files=[("file", ("a.jpg", photo, "image/jpeg")),
                                                    ("file", ("b.jpg", photo, "image/jpeg"))]), 400, "multipart")
        assert_refusal(post("/search/image", files={"file": ("a.jpg", photo[: len(photo) // 3], "image/jpeg")}), 422,
                       "uploaded image")
        assert_refusal(post("/search/image?k=0", files={"file": ("a.jpg", photo, "image/jpeg")}), 400, "k must be")
        assert post("/search/image", files={"file": ("a.jpg", photo, "image/jpeg")}).status_code == 200


def test_decompression_bombs_are_refused(served):
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 3000), "white").save(buffer, format="PNG")
    with client_for(served, max_image_pixels=1_000_000) as client:
        response = client.post("/search/image", files={"file": ("big.png", buffer.getvalue(), "image/png")})
    assert_refusal(response, 422, "uploaded image")


# --------------------------------------------------------------------------- token, paths


def test_bearer_token_guards_the_api_but_not_the_page(served):
    with client_for(served, token="s3cret-token") as client:
        refused = client.get("/search", params={"q": "红色"})
        assert_refusal(refused, 401, "Authorization: Bearer")
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert_refusal(client.get("/search", params={"q": "红色"}, headers={"Authorization": "Bearer wrong"}), 401, "not")
        assert_refusal(client.get("/search", params={"q": "红色"}, headers={"Authorization": "Basic s3cret-token"}), 401)
        ok = {"Authorization": "Bearer s3cret-token"}
        assert client.get("/search", params={"q": "红色"}, headers=ok).status_code == 200
        name = served["records"][0].image_path.name
        assert_refusal(client.get(f"/images/{image_id(name)}"), 401)
        assert client.get(f"/images/{image_id(name)}", headers=ok).status_code == 200
        photo = jpeg_bytes(served["images"] / name)
        assert_refusal(client.post("/search/image", files={"file": ("a.jpg", photo, "image/jpeg")}), 401)
        assert client.get("/healthz").json() == {"status": "ok"}  # alive, no details
        assert client.get("/healthz", headers=ok).json()["images"] == 8
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200


def test_paths_never_leave_the_images_folder(tiny_run, served, tmp_path):
    secret = tmp_path / "secret.jpg"
    shutil.copy(served["images"] / served["records"][0].image_path.name, secret)
    images = copy_images(served["records"][:3], tmp_path / "photos")
    shutil.copy(secret, images / "link.jpg")
    build_index(images, tmp_path / "idx", tiny_run.out, workers=0, device="cpu")
    settings = ServeSettings(index=tmp_path / "idx", device="cpu", reload_interval=0)
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/images/{image_id('link.jpg')}").status_code == 200
        # Indexed as a plain file, then replaced on disk by a link that points out of the folder.
        (images / "link.jpg").unlink()
        (images / "link.jpg").symlink_to(secret)
        assert_refusal(client.get(f"/images/{image_id('link.jpg')}"), 404, "link.jpg")
        for attempt in ("..%2F..%2Fsecret.jpg", "%2E%2E%2Fsecret.jpg", "....//secret.jpg", "%2Fetc%2Fpasswd"):
            response = client.get(f"/images/{attempt}")
            assert response.status_code == 404 and response.headers["content-type"] == "application/json", attempt
        ok = client.get(f"/images/{image_id(served['records'][0].image_path.name)}")
        assert ok.status_code == 200
    root = images
    assert file_inside(root, "../secret.jpg") is None
    assert file_inside(root, str(secret)) is None  # absolute
    assert file_inside(root, "link.jpg") is None
    assert file_inside(root, "missing.jpg") is None
    assert file_inside(root, "") is None
    assert file_inside(root, served["records"][0].image_path.name) == (root / served["records"][0].image_path.name).resolve()


# --------------------------------------------------------------------------- reloads


def test_reload_swaps_generations_while_old_requests_finish(tiny_run, served, tmp_path):
    images = copy_images(served["records"][:4], tmp_path / "photos")
    build_index(images, tmp_path / "idx", tiny_run.out, workers=0, device="cpu")
    live = LiveIndex(tmp_path / "idx", device="cpu")
    old = live.current
    assert not live.refresh()  # nothing changed
    copy_images(served["records"][4:], images)
    update_index(images, tmp_path / "idx", workers=0, device="cpu")
    assert live.changed() and live.refresh()
    new = live.current
    assert len(old.index) == 4 and len(new.index) == 8 and new.generation != old.generation
    assert new.loaded is old.loaded  # same checkpoint: the model is not loaded again
    # A request that took the old snapshot still ranks against it, although its files are gone.
    assert not (tmp_path / "idx" / old.generation).exists()
    old_answer, new_answer = run_batch([TextJob("红色圆形", 8, old), TextJob("红色圆形", 8, new)])
    assert len(old_answer.rows) == 4 and len(new_answer.rows) == 8
    # A damaged update keeps the current generation serving and says why.
    (tmp_path / "idx" / "index.json").write_text("{not json", encoding="utf-8")
    assert not live.refresh() and live.current is new and "index.json" in live.last_error
    assert not live.changed()  # the same damaged file is not re-read on every look


def test_a_rebuild_with_another_checkpoint_swaps_the_model_with_the_index(tiny_run, served, tmp_path):
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-ckpt"
    shutil.copytree(tiny_run.out / "final", other)
    state = load_file(other / "model.safetensors")
    name = next(n for n, t in state.items() if t.is_floating_point())
    state[name] = state[name] + 0.01
    save_file(state, other / "model.safetensors")
    images = copy_images(served["records"][:3], tmp_path / "photos")
    build_index(images, tmp_path / "idx", tiny_run.out, workers=0, device="cpu")
    live = LiveIndex(tmp_path / "idx", device="cpu")
    old = live.current
    build_index(images, tmp_path / "idx", other, workers=0, device="cpu")
    assert live.refresh()
    new = live.current
    assert new.loaded is not old.loaded and new.model_sha256 != old.model_sha256
    assert Path(new.loaded.path).resolve() == other.resolve()
    fresh = Searcher(load_index(tmp_path / "idx"), device="cpu").search(texts=["红色圆形"], k=3)[0].hits
    (answer,) = run_batch([TextJob("红色圆形", 3, new)])
    np.testing.assert_allclose(answer.scores, [hit.score for hit in fresh], atol=1e-5)


def test_requests_during_a_reload_are_all_answered(tiny_run, served, tmp_path):
    images = copy_images(served["records"][:4], tmp_path / "photos")
    build_index(images, tmp_path / "idx", tiny_run.out, workers=0, device="cpu")
    settings = ServeSettings(index=tmp_path / "idx", device="cpu", reload_interval=0.02)
    stop = threading.Event()
    answers: list[tuple[int, int | None, float, float]] = []  # status, index size, sent, answered

    with TestClient(create_app(settings)) as client:
        def ask() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                response = client.get("/search", params={"q": "两个红色圆形", "k": 8})
                answers.append((response.status_code, response.json().get("images"), sent, time.monotonic()))

        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(ask)
            time.sleep(0.3)
            copy_images(served["records"][4:], images)
            update_index(images, tmp_path / "idx", workers=0, device="cpu")
            deadline = time.monotonic() + 20
            while client.get("/healthz").json()["images"] != 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()
        health = client.get("/healthz").json()
    assert health["images"] == 8 and health["reloads"] == 1 and health["reload_error"] is None
    assert answers and all(status == 200 for status, *_ in answers)
    assert {count for _, count, _, _ in answers} == {4, 8}
    # Once swapped, never back: a request sent after any answer came from the new index
    # is answered by the new index too (requests already in flight may finish on the old one).
    first_new = min(answered for _, count, _, answered in answers if count == 8)
    assert all(count == 8 for _, count, sent, _ in answers if sent > first_new)
    assert any(count == 4 for _, count, sent, _ in answers if sent < first_new)


# --------------------------------------------------------------------------- batching


def test_micro_batcher_batches_queries_that_arrive_together():
    calls: list[list[int]] = []

    def square(items):
        calls.append(list(items))
        time.sleep(0.05)
        return [ValueError(f"bad {x}") if x == 13 else x * x for x in items]

    batcher = MicroBatcher(square, max_batch=8, max_wait=0.01, max_pending=100)

    async def scenario():
        first = await asyncio.gather(*(batcher.submit(i) for i in range(20)), return_exceptions=True)
        single = await batcher.submit(3)
        await batcher.aclose()
        return first, single

    first, single = asyncio.run(scenario())
    assert [r for i, r in enumerate(first) if i != 13] == [i * i for i in range(20) if i != 13]
    assert isinstance(first[13], ValueError) and str(first[13]) == "bad 13"  # only its caller hears it
    assert single == 9
    assert [len(c) for c in calls] == [8, 8, 4, 1]  # 20 at once: full batches; one alone: a batch of one


def test_concurrent_requests_share_batches_and_get_their_own_answers(served):
    queries = [record.captions[0] for record in served["records"]]
    barrier = threading.Barrier(len(queries))
    with client_for(served, batch_wait=0.2, batch_size=len(queries)) as client:
        def ask(query):
            barrier.wait()
            return client.get("/search", params={"q": query, "k": 3}).json()

        with ThreadPoolExecutor(len(queries)) as pool:
            answers = list(pool.map(ask, queries))
        sizes = client.get("/healthz").json()["recent_batch_sizes"]
    assert max(sizes) > 1 and sum(sizes) == len(queries)
    for query, answer in zip(queries, answers):
        expected = served["searcher"].search(texts=[query], k=3)[0].hits
        assert answer["query"] == query and [h["path"] for h in answer["results"]] == [h.path for h in expected]
        np.testing.assert_allclose([h["score"] for h in answer["results"]], [h.score for h in expected], atol=1e-5)


def test_micro_batcher_failures_and_back_pressure():
    def broken(items):
        raise RuntimeError("model crashed")

    batcher = MicroBatcher(broken, max_batch=4, max_wait=0.0, max_pending=2)

    async def scenario():
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        await batcher.aclose()
        return results

    results = asyncio.run(scenario())
    assert sum(isinstance(r, RuntimeError) for r in results) == 2
    assert sum(isinstance(r, BatcherBusy) for r in results) == 1  # the third found two waiting
    with pytest.raises(ValueError):
        MicroBatcher(broken, max_batch=0)


# --------------------------------------------------------------------------- the command


def test_serve_command_binds_localhost_by_default(served, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    assert main(["serve", "--index", str(served["index"]), "--device", "cpu"]) == 0
    app, kwargs = calls[-1]
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8000
    assert app.state.settings.token is None and len(app.state.live.current.index) == 8
    assert "Serving 8 images" in capsys.readouterr().err
    monkeypatch.setenv("WENLAN_SERVE_TOKEN", "from-env")
    assert main(["serve", "--index", str(served["index"]), "--device", "cpu", "--host", "0.0.0.0", "--port", "9"]) == 0
    assert calls[-1][1]["host"] == "0.0.0.0" and calls[-1][0].state.settings.token == "from-env"
    monkeypatch.delenv("WENLAN_SERVE_TOKEN")
    assert main(["serve", "--index", str(served["index"]), "--device", "cpu", "--host", "0.0.0.0"]) == 0
    assert "without --token" in capsys.readouterr().err


def test_serve_command_errors(served, tmp_path, monkeypatch, capsys):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: pytest.fail("must not start"))
    assert main(["serve", "--index", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and err.count("\n") == 1
    assert main(["serve", "--index", str(served["index"]), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--index", str(served["index"]), "--token", " "]) == 2
    assert "--token" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # the serve extra is not installed
    assert main(["serve", "--index", str(served["index"])]) == 2
    assert "pip install 'wenlan[serve]'" in capsys.readouterr().err
