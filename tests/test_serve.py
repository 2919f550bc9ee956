"""``claver serve`` over real HTTP (uvicorn on a free 127.0.0.1 port) and in a real browser.

The API must answer exactly what ``claver predict --json`` prints for the same video, refuse
bad uploads and paths outside ``--root`` with JSON errors, and the page must work in Debian's
Chromium driven by Selenium (skipped, with the reason, where no browser can be had:
``scripts/bootstrap.sh test`` installs it as root).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
urllib3 = pytest.importorskip("urllib3")

import claver  # noqa: E402
from claver.cli import main  # noqa: E402
from claver.models.factory import save_model  # noqa: E402
from claver.serve.app import create_app  # noqa: E402
from claver.serve.service import RequestError, ServeOptions, Service, parse_labels  # noqa: E402
from videos import make_video  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
LABELS = ["running", "walking", "jumping"]


class Server:
    """uvicorn serving ``service`` in a thread on a free 127.0.0.1 port."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def get(self, path: str) -> urllib3.BaseHTTPResponse:
        return urllib3.request("GET", self.url + path, timeout=120)

    def post(self, fields: dict | list | None = None, **kw) -> urllib3.BaseHTTPResponse:
        return urllib3.request("POST", self.url + "/v1/predict", fields=fields, timeout=120,
                               **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = save_model(claver.create_model("claver-tiny", num_frames=4), tmp / "tiny.safetensors")
    root = tmp / "root"
    (root / "clips").mkdir(parents=True)
    video = make_video(root / "clips" / "a.mp4", num_frames=40, fps=10, size=(64, 48))
    long = make_video(root / "long.mp4", num_frames=80, fps=10, size=(64, 48))  # 8 s
    outside = make_video(tmp / "outside.mp4", num_frames=10, size=(64, 48))
    (root / "escape.mp4").symlink_to(outside)
    return {"tmp": tmp, "model": str(model), "root": root, "video": video, "long": long,
            "outside": outside}


@pytest.fixture(scope="module")
def server(files):
    options = ServeOptions(root=files["root"], max_upload_mb=1, max_duration_s=6, max_jobs=2)
    srv = Server(Service(files["model"], options=options))
    yield srv
    srv.stop()


def close(a, b) -> bool:
    """Equal JSON values, floats within 1e-5 (the server's threads may sum in another order;
    where ONNX Runtime is installed the CLI and ``claver.predict`` run it, the server torch)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-5)
    return a == b


def cli_json(capsys, *argv: str) -> dict:
    """``claver predict ... --json``; ``runtime`` dropped (the server runs torch, the CLI
    picks ONNX Runtime where installed: same probabilities within the tolerance)."""
    capsys.readouterr()
    assert main(["predict", *argv, "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    out.pop("runtime", None)
    return out


def api_json(response: urllib3.BaseHTTPResponse) -> dict:
    assert response.status == 200, response.data
    out = response.json()
    out.pop("runtime", None)
    return out


def test_model_description(server, files):
    info = json.loads(server.get("/v1/model").data)
    assert info["model"] == files["model"] and info["architecture"].startswith("claver-tiny")
    assert info["root"] is True and info["classes"] is None
    assert info["limits"] == {"max_upload_mb": 1, "max_duration_s": 6, "max_jobs": 2,
                              "max_labels": 1000}
    page = server.get("/")
    assert page.status == 200 and b'id="video-file"' in page.data


def test_upload_equals_claver_predict_and_the_cli(server, files, capsys):
    data = files["video"].read_bytes()
    r = server.post({"video": ("my clip.mp4", data, "video/mp4"),
                     "labels": ",".join(LABELS), "topk": "2"})
    body = api_json(r)
    expected = claver.predict(files["video"], LABELS, files["model"], topk=2).to_dict()
    assert close(body["results"], [{**expected, "video": "my clip.mp4"}])
    cli = cli_json(capsys, str(files["video"]), "--labels", ",".join(LABELS),
                   "--model", files["model"], "--topk", "2")
    cli["results"][0]["video"] = "my clip.mp4"
    assert close(body, cli)


def test_path_under_root_templates_and_windows_equal_the_cli(server, files, capsys):
    fields = [("path", "clips/a.mp4"), ("labels", "\n".join(LABELS)),
              ("template", "a photo of {}"), ("template", "{}, an action")]
    body = api_json(server.post(fields))
    cli = cli_json(capsys, str(files["video"]), "--labels", ",".join(LABELS), "--model",
                   files["model"], "--template", "a photo of {}", "--template", "{}, an action")
    cli["results"][0]["video"] = "clips/a.mp4"
    assert close(body, cli) and body["text_rows"] == 2
    assert server.post({"path": "clips/a.mp4", "labels": "a,b", "template": "claver"}
                       ).json()["text_rows"] == 16
    body = api_json(server.post({"path": "clips/a.mp4", "labels": ",".join(LABELS),
                                 "window": "1.5", "stride": "1", "threshold": "0.4",
                                 "plot": "1"}))
    cli = cli_json(capsys, str(files["video"]), "--labels", ",".join(LABELS), "--model",
                   files["model"], "--window", "1.5", "--stride", "1", "--threshold", "0.4")
    timeline = body["results"][0].pop("timeline")
    for w in cli["results"][0]["windows"]:
        w["video"] = "clips/a.mp4"
    cli["results"][0]["video"] = "clips/a.mp4"
    assert close(body, cli) and len(body["results"][0]["windows"]) == 4  # 0, 1, 2, 2.5 s
    from PIL import Image

    png = Image.open(io.BytesIO(base64.b64decode(timeline.split(",", 1)[1])))
    assert png.format == "PNG" and png.size == (1200, 500)


def test_explanation_is_an_animation(server, files):
    r = server.post({"path": "clips/a.mp4", "labels": ",".join(LABELS), "explain": "1"}).json()
    exp = r["results"][0]["explanation"]
    assert exp["label"] == r["results"][0]["label"] and exp["method"] == "grad-attention"
    assert exp["times"] == pytest.approx([0.5, 1.5, 2.5, 3.5])  # frames 5, 15, 25, 35 at 10 fps
    from PIL import Image

    gif = Image.open(io.BytesIO(base64.b64decode(exp["gif"].split(",", 1)[1])))
    assert gif.format == "GIF" and gif.n_frames == 4


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"labels": "a,b"}, 400, "send one video"),
    ({"path": "clips/a.mp4", "video": ("a.mp4", b"x", "video/mp4"), "labels": "a"}, 400,
     "send one video"),
    ({"path": "clips/a.mp4", "labels": "a,,b"}, 400, "empty label"),
    ({"path": "clips/a.mp4", "labels": "a,a"}, 400, "distinct"),
    ({"path": "clips/a.mp4"}, 400, "no labels"),
    ({"path": "clips/a.mp4", "labels": "a,b", "topk": "0"}, 400, "topk must be >= 1"),
    ({"path": "clips/a.mp4", "labels": "a,b", "topk": "many"}, 400, "not an integer"),
    ({"path": "clips/a.mp4", "labels": "a,b", "stride": "1"}, 400, "need a window"),
    ({"path": "clips/a.mp4", "labels": "a,b", "template": "a {} b {}"}, 400, "template"),
    ({"video": ("junk.mp4", b"not a video at all", "video/mp4"), "labels": "a,b"}, 422,
     "junk.mp4: not a readable video"),
    ({"video": ("e.mp4", b"", "video/mp4"), "labels": "a,b"}, 400, "empty"),
    ({"path": "long.mp4", "labels": "a,b"}, 413, "8.0 s long; this server takes videos up to"),
    ({"path": "../outside.mp4", "labels": "a,b"}, 403, "outside the served folder"),
    ({"path": "escape.mp4", "labels": "a,b"}, 403, "outside the served folder"),
    ({"path": "/etc/hostname", "labels": "a,b"}, 403, "outside the served folder"),
    ({"path": "clips/missing.mp4", "labels": "a,b"}, 404, "no such file"),
    ({"path": "clips", "labels": "a,b"}, 400, "not a file"),
])
def test_bad_requests_get_json_errors(server, fields, status, message):
    r = server.post(fields)
    assert r.status == status, r.data
    assert message in r.json()["error"]


def test_upload_size_is_enforced_while_reading(server):
    big = ("big.mp4", b"\0" * (2 << 20), "video/mp4")
    r = server.post({"video": big, "labels": "a,b"})  # refused on its Content-Length
    assert r.status == 413 and "larger than 1 MB" in r.json()["error"]
    body, ctype = urllib3.encode_multipart_formdata({"video": big, "labels": "a,b"})

    def chunks():  # no Content-Length: the limit must be counted while the body arrives
        for i in range(0, len(body), 1 << 16):
            yield body[i:i + (1 << 16)]

    r = urllib3.PoolManager().urlopen("POST", server.url + "/v1/predict", body=chunks(),
                                      chunked=True, headers={"Content-Type": ctype},
                                      timeout=120)
    assert "content-length" not in {k.lower() for k in r.headers} or r.status == 413
    assert r.status == 413 and "larger than 1 MB" in r.json()["error"]


def test_busy_server_refuses_more_jobs(server):
    with server.service.job(), server.service.job():  # both slots taken
        r = server.post({"path": "clips/a.mp4", "labels": "a,b"})
        assert r.status == 503 and "busy with 2 job(s)" in r.json()["error"]
    assert server.post({"path": "clips/a.mp4", "labels": "a,b"}).status == 200


def test_unknown_routes_and_methods(server):
    assert server.get("/v2/nothing").status == 404
    assert "error" in server.get("/v2/nothing").json()
    assert server.get("/v1/predict").status == 405


def test_service_without_root_and_options(files):
    service = Service(files["model"])
    with pytest.raises(RequestError, match="without --root") as e:
        service.resolve_path("a.mp4")
    assert e.value.status == 403
    with pytest.raises(ValueError, match="--max-jobs"):
        ServeOptions(max_jobs=0)
    with pytest.raises(ValueError, match="not a folder"):
        ServeOptions(root=files["tmp"] / "nope")
    assert parse_labels("a, b ,c") == ["a", "b", "c"]
    assert parse_labels("a, b\nc\n\n") == ["a, b", "c"]  # lines: commas belong to labels
    assert parse_labels("  ") == []


def test_checkpoint_classes_are_the_default_labels(files):
    record = {"classes": ["jumping", "running"], "templates": "{}", "descriptions": None,
              "origin": "test"}
    srv = Server(Service(files["model"], record=record,
                         options=ServeOptions(root=files["root"])))
    try:
        assert json.loads(srv.get("/v1/model").data)["classes"] == ["jumping", "running"]
        body = srv.post({"path": "clips/a.mp4"}).json()
        expected = claver.predict(files["video"], ["jumping", "running"], files["model"],
                                  template="{}").to_dict()
        assert body["labels"] == ["jumping", "running"]
        assert close(body["results"], [{**expected, "video": "clips/a.mp4"}])
    finally:
        srv.stop()


def test_cli_serve_is_registered(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--max-upload-mb" in out and "127.0.0.1" in out


def test_cli_serve_starts_on_localhost_and_says_so(files):
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "claver", "serve", "--model", files["model"], "--port",
         str(port), "--root", str(files["root"]), "--max-jobs", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # ends when the process does
            lines.append(line)
            if line.startswith("serving"):
                break
        assert lines and lines[-1].startswith(f"serving http://127.0.0.1:{port}/"), lines
        assert "this machine only" in lines[-1]
        assert any(line.startswith("limits") and "3 job(s)" in line for line in lines)
        for _ in range(600):  # the socket opens just after the line is printed
            try:
                info = urllib3.request("GET", f"http://127.0.0.1:{port}/v1/model", timeout=5,
                                       retries=False).json()
                break
            except urllib3.exceptions.HTTPError:
                if proc.poll() is not None:
                    pytest.fail("claver serve stopped: " + "".join(lines))
                threading.Event().wait(0.1)
        else:
            pytest.fail("claver serve printed its address but does not answer there")
        assert info["limits"]["max_jobs"] == 3 and info["root"] is True
    finally:
        proc.terminate()
        proc.wait(30)


# ------------------------------------------------------------------------------ search

@pytest.fixture(scope="module")
def indexed(files):
    """An index over three tiny videos (1.5 s windows: rows starting at 0, 1.5, 3 s ...) and
    a server holding it; one indexed file is then overwritten with junk."""
    tmp = files["tmp"] / "indexed"
    tmp.mkdir()
    videos = [make_video(tmp / "b.mp4", num_frames=30, fps=10, size=(64, 48)),
              make_video(tmp / "c.mp4", num_frames=20, fps=10, size=(48, 64)),
              make_video(tmp / "gone.mp4", num_frames=20, fps=10, size=(64, 48))]
    idx = claver.index([files["video"], *videos], tmp / "index", files["model"], window=1.5,
                       workers=0)
    videos[2].write_bytes(b"not a video any more")
    srv = Server(Service(files["model"], index=tmp / "index"))
    yield {"index": idx, "path": tmp / "index", "server": srv, "gone": str(videos[2])}
    srv.stop()


def _image(url: str):
    from PIL import Image

    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def test_search_equals_index_search_with_thumbnails(indexed):
    from videos import frame_index

    srv, idx = indexed["server"], indexed["index"]
    info = json.loads(srv.get("/v1/model").data)
    assert info["index"] == {"path": str(indexed["path"]), "rows": len(idx), "files": 4}
    assert len(idx) == 3 + 2 + 2 + 2  # 4 s, 3 s, 2 s, 2 s in 1.5 s windows
    for q, k in (("someone running", 5), ("a dog", 100)):
        r = srv.get("/v1/search?" + urlencode({"q": q, "k": k}))
        assert r.status == 200, r.data
        body = r.json()
        hits = claver.Index(indexed["path"]).search(q, k)  # an independent load of the index
        assert body["query"] == q and len(body["results"]) == min(k, len(idx)) == len(hits)
        for got, hit in zip(body["results"], hits, strict=True):
            assert set(got) == {"file", "start", "end", "score", "rank", "thumbnail"}
            assert (got["file"], got["rank"]) == (hit.file, hit.rank + 1)
            assert got["score"] == pytest.approx(hit.score, abs=1e-6)
            assert (got["start"], got["end"]) == pytest.approx((hit.start, hit.end), abs=1e-3)
            if hit.file == indexed["gone"]:
                assert got["thumbnail"] is None  # unreadable now: no thumbnail, no 500
                continue
            image = _image(got["thumbnail"])
            assert image.format == "JPEG" and image.size in ((64, 48), (48, 64))
            # the frame shown at the hit's start: frame round(start * 10) at 10 fps
            assert frame_index(image.convert("RGB")) == round(hit.start * 10)
    starts = {got["start"] for got in body["results"]}
    assert {0.0, 0.5, 1.5, 2.5} <= starts  # every row was returned (k=100)


@pytest.mark.parametrize(("query", "status", "message"), [
    ("q=", 400, "q is empty"), ("q=%20%20", 400, "q is empty"), ("k=3", 400, "q is empty"),
    ("q=a&k=0", 400, "k=0"), ("q=a&k=101", 400, "k=101"), ("q=a&k=many", 400,
                                                          "not an integer"),
])
def test_bad_searches_get_json_errors(indexed, query, status, message):
    r = indexed["server"].get("/v1/search?" + query)
    assert r.status == status, r.data
    assert message in r.json()["error"]


def test_search_without_an_index(server):
    info = json.loads(server.get("/v1/model").data)
    assert info["index"] is None
    r = server.get("/v1/search?q=running")
    assert r.status == 404 and "--index" in r.json()["error"]
    assert b'id="search-form"' in server.get("/").data


def test_index_of_another_model_is_refused_at_start(indexed, files, capsys, monkeypatch):
    from claver.search import ModelMismatchError

    def no_serving(*args, **kwargs):
        pytest.fail("claver serve started serving with a bad --index")

    monkeypatch.setattr(uvicorn, "run", no_serving)
    torch.manual_seed(1)
    other = save_model(claver.create_model("claver-tiny", num_frames=4),
                       files["tmp"] / "other.safetensors")
    with pytest.raises(ModelMismatchError, match="was built with"):
        Service(str(other), index=indexed["path"])
    capsys.readouterr()
    assert main(["serve", "--model", str(other), "--index", str(indexed["path"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("claver serve: error: ") and "\n" not in err
    assert "was built with" in err and "rebuild the index" in err
    assert main(["serve", "--model", files["model"], "--index", str(files["tmp"])]) == 2
    assert "no index here" in capsys.readouterr().err


# ------------------------------------------------------------------------------ browser

def _browser() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("no Debian chromium + chromium-driver here (as root: apt-get install -y "
                    "chromium chromium-driver, or bash scripts/bootstrap.sh test)")
    pytest.importorskip("selenium")
    return chrome, driver


def _artifact(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("CLAVER_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _headless_chrome():
    """Debian's Chromium, headless, driven by Selenium (skips where it is not installed)."""
    chrome, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,1400"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=DriverService(driver_path), options=opts)


@pytest.mark.slow
def test_page_in_a_real_browser(server, files, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser = _headless_chrome()
    try:
        wait = WebDriverWait(browser, 180)
        browser.get(server.url + "/")
        wait.until(lambda b: "claver-tiny" in b.find_element(By.ID, "model").text)
        assert Select(browser.find_element(By.ID, "template")).first_selected_option \
            .get_attribute("value") == "a video of {}."
        browser.find_element(By.ID, "video-file").send_keys(str(files["video"]))
        browser.find_element(By.ID, "labels").send_keys("running\nwalking\njumping")
        browser.find_element(By.ID, "run").click()
        wait.until(ec.visibility_of_element_located((By.ID, "result")))
        expected = claver.predict(files["video"], LABELS, files["model"])
        assert browser.find_element(By.ID, "top-label").text == expected.label
        assert browser.find_element(By.ID, "error").text == ""
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name")
        assert [b.text for b in bars] == [lb for lb, _ in expected.top(5)]
        animation = browser.find_element(By.ID, "animation")
        assert animation.is_displayed()
        assert animation.get_attribute("src").startswith("data:image/gif;base64,")
        wait.until(lambda b: b.execute_script(
            "const i = document.getElementById('animation'); "
            "return i.complete && i.naturalWidth > 0;"))
        browser.save_screenshot(str(_artifact(tmp_path, "serve_page.png")))
        # a bad video: the page shows the server's error
        junk = tmp_path / "junk.mp4"
        junk.write_bytes(b"not a video")
        browser.find_element(By.ID, "video-file").send_keys(str(junk))
        browser.find_element(By.ID, "run").click()
        wait.until(lambda b: b.find_element(By.ID, "error").text)
        assert "junk.mp4: not a readable video" in browser.find_element(By.ID, "error").text
    finally:
        browser.quit()


@pytest.mark.slow
def test_search_box_in_a_real_browser(indexed, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _headless_chrome()
    try:
        wait = WebDriverWait(browser, 180)
        browser.get(server.url + "/")  # no index: no search box
        wait.until(lambda b: "claver-tiny" in b.find_element(By.ID, "model").text)
        assert not browser.find_element(By.ID, "search-form").is_displayed()
        browser.get(indexed["server"].url + "/")
        wait.until(lambda b: b.find_element(By.ID, "search-form").is_displayed())
        assert browser.find_element(By.ID, "index-size").text == "9 rows of 4 files"
        browser.find_element(By.ID, "search-query").send_keys("someone running")
        k = browser.find_element(By.ID, "search-k")
        k.clear()
        k.send_keys("4")
        browser.find_element(By.ID, "search-run").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#search-results .hit")) == 4)
        hits = indexed["index"].search("someone running", 4)
        shown = browser.find_elements(By.CSS_SELECTOR, "#search-results .hit")
        assert [h.find_element(By.CSS_SELECTOR, ".file").text for h in shown] == \
            [Path(h.file).name for h in hits]
        assert [h.find_element(By.CSS_SELECTOR, ".time").text for h in shown] == \
            [f"{h.start:.1f} s - {h.end:.1f} s" for h in hits]
        scores = [h.find_element(By.CSS_SELECTOR, ".score").text.split() for h in shown]
        assert [s[0] for s in scores] == ["score"] * 4
        assert [float(s[1]) for s in scores] == pytest.approx([h.score for h in hits],
                                                              abs=6e-4)
        readable = sum(h.file != indexed["gone"] for h in hits)
        wait.until(lambda b: b.execute_script(
            "return [...document.querySelectorAll('#search-results img')]"
            ".filter((i) => i.complete && i.naturalWidth > 0).length;") == readable)
        browser.save_screenshot(str(_artifact(tmp_path, "serve_search.png")))
        browser.find_element(By.ID, "search-query").clear()
        browser.find_element(By.ID, "search-run").click()
        assert "type what to look for" in browser.find_element(By.ID, "search-error").text
    finally:
        browser.quit()
