"""The web app without a browser: the colorize logic, the results view, the options, and
the running server answering through gradio_client (one-line errors, the server survives)."""

import dataclasses
import json
import os
import socket
import sys

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import app as app_module
from colorizer import Colorizer, ImageError, ImageTooLargeError
from colorizer.color import rgb_to_l
from colorizer.images import Lightness
from demo import EXAMPLES, build_app, parser
from demo.colorize_tab import (AnalysisCache, _user_message, analyze, full_prediction, render_preview,
                               save_full_png)
from demo.results_tab import bar_chart, results
from demo.survey.stats import rate


@pytest.fixture(scope="module", autouse=True)
def quiet_single_thread():
    """One torch thread here (on a shared 2-core machine, OpenMP threads fighting over busy
    cores make chroma clipping tens of times slower) and no Gradio analytics; both restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny untrained Colorizer (seeded, so its colours vary with temperature)."""
    torch.manual_seed(0)
    return Colorizer(width=0.125, input_size=64).eval()


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory):
    """A 640x480 colour photo (astronaut, stretched) as JPEG."""
    path = tmp_path_factory.mktemp("photos") / "astronaut big.jpg"
    Image.fromarray(data.astronaut()).resize((640, 480)).save(path, quality=90)
    return path


def _l(img: Image.Image) -> torch.Tensor:
    return rgb_to_l(torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)[None])


def test_examples_exist_and_are_small():
    assert len(EXAMPLES) >= 2
    for path in EXAMPLES:
        assert os.path.getsize(path) < 100_000
        assert Image.open(path).mode == "L"


def test_analyze_preview_and_temperature(tiny_model, big_photo):
    a = analyze(tiny_model, big_photo, max_pixels=10_000_000, preview_side=320)
    assert a.size == (640, 480) and a.preview.size == (320, 240)
    gray, color = render_preview(a, 0.38)
    assert gray.size == color.size == (320, 240)
    g = np.asarray(gray, np.int16)
    assert np.abs(g - g.mean(axis=2, keepdims=True)).max() <= 1  # L only, no colour (up to rounding)
    assert (_l(gray) - _l(color)).abs().max() < 1.0  # the colorization keeps the lightness
    _, color_hot = render_preview(a, 1.0)
    _, color_cold = render_preview(a, 0.05)
    assert np.abs(np.asarray(color_hot, np.int16) - np.asarray(color_cold, np.int16)).max() > 0
    assert a.uncertainty.width == 320 and 240 + 10 < a.uncertainty.height < 240 + 40 and a.uncertainty.mode == "RGB"
    scale = np.asarray(a.uncertainty)[242:246]  # the colour scale under the map: dark (sure) to bright
    assert scale[:, :10].mean() < 60 < 200 < scale[:, -10:].mean()


def test_full_resolution_png(tiny_model, big_photo, tmp_path):
    a = analyze(tiny_model, big_photo, max_pixels=None, preview_side=160)
    path = save_full_png(a, 0.5, tmp_path)
    assert path.suffix == ".png" and path.name == "astronaut-big-color-T0.5.png"
    out = Image.open(path)
    assert out.size == (640, 480)
    assert (_l(out) - _l(Image.open(big_photo))).abs().mean() < 0.5


def _large_values(obj, seen=None):
    """Every tensor, array or PIL image reachable from a dataclass, with its element count."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, torch.nn.Module):  # the shared model is not per-user state
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj.numel()]
    if isinstance(obj, np.ndarray):
        return [obj.size]
    if isinstance(obj, Image.Image):
        return [obj.width * obj.height * len(obj.getbands())]
    if dataclasses.is_dataclass(obj):
        return [n for f in dataclasses.fields(obj) for n in _large_values(getattr(obj, f.name), seen)]
    if isinstance(obj, Lightness):  # L as floats or as gray levels, and the alpha
        return [n for v in (obj._l, obj.levels, obj.alpha) for n in _large_values(v, seen)]
    return []


def test_analysis_keeps_nothing_at_full_resolution(tiny_model, big_photo, tmp_path):
    """The per-user state is preview-sized; the download recomputes the full-resolution L
    from the upload and matches a full analysis exactly."""
    upload = tmp_path / big_photo.name
    upload.write_bytes(big_photo.read_bytes())
    a = analyze(tiny_model, upload, max_pixels=None, preview_side=160)
    sizes = _large_values(a)
    # preview L, network output, two preview images: all of it less than the full-resolution L alone
    assert len(sizes) == 4 and sum(sizes) < 640 * 480
    full = full_prediction(a)
    assert full.size == (640, 480)
    expected = tiny_model.analyze(big_photo, max_pixels=None).render(0.5)
    assert np.array_equal(np.asarray(full.render(0.5)), np.asarray(expected))
    upload.unlink()  # the server's upload cache was cleared
    with pytest.raises(ImageError, match="expired; upload it again"):
        save_full_png(a, 0.5, tmp_path / "downloads")


def test_build_app_keeps_no_analysis_in_session_state_and_leaves_pil_alone(tiny_model):
    before = Image.MAX_IMAGE_PIXELS
    demo = build_app(tiny_model, None, max_pixels=1000, examples=[])
    assert Image.MAX_IMAGE_PIXELS == before  # PIL's decompression-bomb check stays on for the process
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert len(states) == 1 and states[0].value is None  # the download's temperature; analyses live in the cache


def test_analysis_cache_drops_the_oldest_by_count_and_by_bytes(tiny_model, big_photo):
    a = analyze(tiny_model, big_photo, None, preview_side=160)
    counts = sum(_large_values(a))  # elements: one byte (images) to four (float tensors) each
    assert counts <= a.nbytes <= 4 * counts
    cache = AnalysisCache(max_items=3, max_bytes=10 * a.nbytes)
    for key in "abcd":
        cache.put(key, a)
    assert len(cache) == 3 and cache.get("a") is None and cache.get("b") is a
    cache.put("e", a)  # "b" was just used: "c" is now the oldest
    assert cache.get("c") is None and cache.get("b") is a and len(cache) == 3
    small = AnalysisCache(max_items=100, max_bytes=int(2.5 * a.nbytes))
    for key in "abcd":
        small.put(key, a)
    assert len(small) == 2 and small.nbytes <= 2.5 * a.nbytes and small.get("d") is a
    tiny = AnalysisCache(max_items=100, max_bytes=1)  # the newest stays even alone over the bound
    tiny.put("a", a)
    tiny.put("b", a)
    assert len(tiny) == 1 and tiny.get("b") is a
    small.forget(gr.Request(session_hash="d"))  # the session's page was closed
    assert small.get("d") is None and len(small) == 1
    with pytest.raises(ValueError, match="max_items and max_bytes must be >= 1, got 0"):
        AnalysisCache(max_items=0)


@pytest.mark.parametrize("objective", ["classification", "regression"])
def test_temperature_slider_shows_only_where_it_changes_the_colours(objective):
    model = Colorizer(width=0.125, input_size=64, objective=objective).eval()
    demo = build_app(model, None, examples=[])
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.elem_id == "temperature"]
    assert len(sliders) == 1 and sliders[0].visible is model.uses_temperature
    assert model.uses_temperature is (objective != "regression")


def test_too_large_upload_is_one_clean_line(tiny_model, big_photo):
    with pytest.raises(ImageTooLargeError) as e:
        analyze(tiny_model, big_photo, max_pixels=200_000)
    msg = _user_message(e.value, big_photo)
    assert msg == "astronaut big.jpg: 640x480 = 307,200 pixels is over the limit of 200,000"
    assert str(big_photo.parent) not in msg


def test_results_view_tables_and_chart():
    votes = [
        {"session_id": "s1", "kind": "trial", "fooled": True, "model": "m", "temperature": 0.38, "photo": "a"},
        {"session_id": "s1", "kind": "trial", "fooled": False, "model": "m", "temperature": 0.38, "photo": "b"},
        {"session_id": "s2", "kind": "trial", "fooled": True, "model": "m", "temperature": 1.0, "photo": "a"},
        {"session_id": "s2", "kind": "attention", "fooled": True, "model": "hue", "temperature": None, "photo": "a"},
    ]
    r = results(votes)
    assert "66.7%" in r["summary"] and "Participants** with test votes: 2" in r["summary"]
    assert "s1" not in str(r) and "s2" not in str(r)  # participant ids are never shown
    assert r["by_temperature"] == [["0.38", 2, 1, 50.0, 9.5, 90.5], ["1", 1, 1, 100.0, 20.7, 100.0]]
    assert [row[0] for row in r["by_photo"]] == ["a", "b"]
    assert "**Sessions**: 2; started over by a returning participant: 0" in r["summary"]
    assert "**Sessions**: 2 (2 complete, 0 unfinished)" in results(votes, per_session=2)["summary"]
    assert "(2 complete, 1 unfinished)" in results(votes + [{**votes[0], "session_id": "s3"}], per_session=2)["summary"]
    retake = {**votes[0], "session_id": "retake-" + "0" * 32}
    assert "returning participant: 1" in results(votes + [retake])["summary"]
    kept = results(votes, exclude_failed=True)  # s2 failed its attention check
    assert kept["by_model"] == [["m", 2, 1, 50.0, 9.5, 90.5]]
    fig = bar_chart([rate("m T=0.38", 1, 2)])
    assert len(fig.axes[0].patches) == 1


def test_options_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COLORIZER_MODEL", str(tmp_path / "m"))
    monkeypatch.setenv("COLORIZER_DB_URL", "postgresql+psycopg://u:p@h/db")
    monkeypatch.setenv("COLORIZER_DISPLAY_SECONDS", "0")
    args = parser().parse_args([])
    assert args.model == str(tmp_path / "m") and args.db.startswith("postgresql+psycopg://")
    assert args.display_seconds == 0.0 and args.survey is None
    assert parser().parse_args(["--model", "other"]).model == "other"


def _one_error_line(capsys, argv) -> str:
    """Run app.py's main; it must exit with status 2 and print one line to stderr."""
    with pytest.raises(SystemExit) as e:
        app_module.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("app.py: error: ") and err.count("\n") == 1, err
    return err


def test_missing_model_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    err = _one_error_line(capsys, ["--model", str(tmp_path / "no" / "such" / "model")])
    assert "--model " in err


def test_model_not_matching_its_config_is_one_line(tmp_path, capsys):
    """Weights saved for one width, a config saying another: one line naming the first mismatch."""
    folder = tmp_path / "mismatch"
    Colorizer(width=0.125, input_size=64).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "width": 0.25}))
    err = _one_error_line(capsys, ["--model", str(folder)])
    assert f"--model {folder}: " in err and "size mismatch" in err


def test_unreachable_database_is_one_line_without_password(tmp_path, tiny_model, capsys):
    tiny_model.save_pretrained(tmp_path / "tiny")
    (tmp_path / "photos").mkdir()
    Image.fromarray(data.coffee()).resize((64, 48)).save(tmp_path / "photos" / "coffee.png")
    url = f"postgresql+psycopg://voter:s3cret-pw@127.0.0.1:{_free_port()}/votes"  # nothing listens there
    err = _one_error_line(capsys, ["--model", str(tmp_path / "tiny"), "--survey", str(tmp_path / "survey"),
                                   "--survey-photos", str(tmp_path / "photos"), "--db", url])  # fmt: skip
    assert "voter:***@127.0.0.1" in err and "cannot open it" in err and "s3cret-pw" not in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app(tiny_model):
    """The app (no survey) served in this process with a 100,000-pixel upload limit."""
    demo = build_app(tiny_model, None, max_pixels=100_000, concurrency=2)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_api_lists_only_the_named_endpoints(running_app):
    from gradio_client import Client

    api = Client(running_app, verbose=False).view_api(return_format="dict", print_info=False)
    assert sorted(api["named_endpoints"]) == ["/colorize", "/render", "/uncertainty"]
    assert api["unnamed_endpoints"] == {}
    colorize = api["named_endpoints"]["/colorize"]
    assert [p["parameter_name"] for p in colorize["parameters"]] == ["photo", "temperature"]
    assert colorize["parameters"][1]["parameter_has_default"]  # the model's temperature unless given


def test_server_refuses_large_upload_then_keeps_working(running_app, big_photo, tmp_path, tiny_model):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(running_app, verbose=False)
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(big_photo)), 0.38, api_name="/colorize")
    assert str(e.value) == "astronaut big.jpg: 640x480 = 307,200 pixels is over the limit of 100,000"
    with pytest.raises(AppError) as e:  # a session with no photo yet
        client.predict(0.5, api_name="/render")
    assert str(e.value).startswith("No photo in this session yet")

    small = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).resize((300, 200)).save(small)
    # More pixels than PIL's own decompression-bomb limit: still our one line, not a traceback.
    huge = tmp_path / "huge.png"
    Image.new("1", (15000, 12000)).save(huge)  # 180 megapixels in 22 kB
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(huge)), 0.38, api_name="/colorize")
    assert str(e.value) == "huge.png: 180,000,000 pixels is over the limit of 100,000"

    png = client.predict(handle_file(str(small)), 0.38, api_name="/colorize")  # the full-resolution file
    assert png.endswith("coffee-color-T0.38.png") and Image.open(png).size == (300, 200)
    hotter = client.predict(0.9, api_name="/render")  # the cached prediction, another T
    assert hotter.endswith("coffee-color-T0.9.png") and Image.open(hotter).size == (300, 200)
    assert not np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(hotter)))
    # the file is exactly the render at that temperature
    expected = np.asarray(full_prediction(analyze(tiny_model, small, None)).render(0.9).convert("RGB"))
    assert np.abs(np.asarray(Image.open(hotter).convert("RGB")).astype(int) - expected).max() <= 1
    heat = Image.open(client.predict(api_name="/uncertainty"))
    assert heat.width == 300 and heat.height > 200  # the map and its colour scale
    # a temperature that is not one is our one line (the model's rule, then the slider's range)
    for bad, message in [("abc", "temperature must be a number in [0, 1], got 'abc'"),
                         (None, "temperature must be a number in [0, 1], got None"),
                         (1.5, "temperature must be in [0, 1], got 1.5"),
                         (0.0, "temperature must be in [0.05, 1] here, got 0")]:  # fmt: skip
        with pytest.raises(AppError) as e:
            client.predict(bad, api_name="/render")
        assert str(e.value) == message
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(small)), "abc", api_name="/colorize")
    assert str(e.value) == "temperature must be a number in [0, 1], got 'abc'"
    assert Image.open(client.predict(0.5, api_name="/render")).size == (300, 200)  # the session still works


def _call(url: str, api_name: str, data: list) -> str:
    """One call through Gradio's plain HTTP API (what a program without gradio_client sends):
    the last line of the event stream."""
    import httpx

    base = f"{url}gradio_api/call/{api_name}"
    event = httpx.post(base, json={"data": data}, timeout=60).json()["event_id"]
    return httpx.get(f"{base}/{event}", timeout=60).text.strip().splitlines()[-1]


def test_data_uri_payloads_get_one_line(running_app, tmp_path):
    """A photo sent inline as a data: URI: garbage, a pixel bomb or not base64 at all is one
    line naming it; a real one is colorized."""
    import base64
    import io

    def uri(payload: bytes) -> dict:
        return {"url": "data:image/png;base64," + base64.b64encode(payload).decode(), "path": None,
                "orig_name": "inline.png", "meta": {"_type": "gradio.FileData"}}  # fmt: skip

    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # 400 megapixels in 50 kB
    photo = io.BytesIO()
    Image.fromarray(data.coffee()).resize((120, 80)).save(photo, "PNG")
    not_base64 = {**uri(b""), "url": "data:image/png;base64,!!!"}
    for payload, expected in [(not_base64, "inline.png: not a base64 data: URI (data:image/png;base64,...)"),
                              (uri(b"garbage"), "inline.png: not a readable image file"),
                              (uri(bomb.getvalue()), "inline.png: 400,000,000 pixels is over the limit of 100,000")]:
        line = _call(running_app, "colorize", [payload, 0.5])
        assert line.startswith("data: ") and json.loads(line[6:])["error"].startswith(expected), line
    line = _call(running_app, "colorize", [uri(photo.getvalue()), 0.5])
    assert json.loads(line[6:])[0]["path"].endswith("inline-color-T0.5.png"), line


def test_app_module_is_tiny():
    source = open(app_module.__file__).read()
    assert len(source.splitlines()) < 40 and 'if __name__ == "__main__":' in source
    assert "gradio" not in sys.modules["app"].__dict__  # the UI lives in demo/


def test_survey_photos_option_prepares_and_uses_sqlite(tmp_path, tiny_model):
    from demo import setup_survey

    tiny_model.save_pretrained(tmp_path / "tiny")
    (tmp_path / "photos").mkdir()
    for name in ("coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).resize((96, 64)).save(tmp_path / "photos" / f"{name}.jpg")
    args = parser().parse_args(
        ["--model", str(tmp_path / "tiny"), "--survey", str(tmp_path / "survey"), "--survey-photos",
         str(tmp_path / "photos"), "--survey-temperatures", "0.2", "0.5", "--trials", "3", "--display-seconds", "0"]
    )  # fmt: skip
    setup = setup_survey(args, tiny_model)
    runner = setup.wait(300)
    survey = runner.survey
    assert survey.photos == ["chelsea", "coffee"] and {p.temperature for p in survey.pairs} == {0.2, 0.5}
    assert runner.store.url == f"sqlite:///{(tmp_path / 'survey' / 'votes.sqlite').resolve()}"
    assert runner.config.n_trials == 3 and runner.config.display_seconds == 0
    assert setup_survey(parser().parse_args(["--no-survey"]), tiny_model) is None


def test_with_no_options_the_turing_test_runs_on_the_shipped_photos(tmp_path, tiny_model, monkeypatch):
    """No survey options: the shipped photos (with their credits) are prepared once into the
    cache folder with --model, votes go to SQLite there, and a second start remakes nothing."""
    from demo import SURVEY_PHOTOS, setup_survey

    credits = (SURVEY_PHOTOS / "README.md").read_text()
    shipped = sorted(p.name for p in SURVEY_PHOTOS.glob("*.jpg"))
    assert 25 <= len(shipped) <= 40 and all(name in credits for name in shipped)
    for name in shipped:
        with Image.open(SURVEY_PHOTOS / name) as img:
            assert max(img.size) <= 256 and img.mode == "RGB"
    monkeypatch.setenv("COLORIZER_CACHE", str(tmp_path / "cache"))
    tiny_model.save_pretrained(tmp_path / "tiny")
    args = parser().parse_args(["--model", str(tmp_path / "tiny"), "--display-seconds", "0"])
    runner = setup_survey(args, tiny_model).wait(600)
    folder = tmp_path / "cache" / "survey"
    assert len(runner.survey.photos) == len(shipped)
    assert runner.store.url == f"sqlite:///{(folder / 'votes.sqlite').resolve()}"
    # the README's protocol, sized to the photos: practice pairs with feedback first (on photos the
    # test never shows), attention checks, and the test pairs
    assert runner.n_practice == 5 and runner.config.n_trials == len(shipped) - 5
    trials = runner.start().trials
    assert [t.kind for t in trials[:5]] == ["practice"] * 5 and runner.n_test == len(shipped) - 5 + 2
    assert {t.kind for t in trials[5:]} == {"trial", "attention"}
    assert not {t.pair.photo for t in trials[:5]} & {t.pair.photo for t in trials[5:] if t.kind == "trial"}
    made = {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")}
    assert len(made) >= 2 * len(shipped)
    setup_survey(args, tiny_model).wait(600)  # a second start: everything cached
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.png")} == made
    monkeypatch.setenv("COLORIZER_NO_SURVEY", "1")
    assert setup_survey(parser().parse_args([]), tiny_model) is None


def test_a_reference_photo_colours_the_upload_after_its_scene(tmp_path):
    """With a global_local model the tab takes a reference photo: the network runs with its
    global features, the full-resolution file keeps them, and a bad reference is one line
    naming it (the photo's own upload stays)."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from tests.test_reference import model as transfer_model

    model = transfer_model.__wrapped__()
    photo, ref = tmp_path / "coffee.png", tmp_path / "astronaut.png"
    Image.fromarray(data.coffee()).resize((300, 200)).save(photo)
    Image.fromarray(data.astronaut()).resize((200, 200)).save(ref)
    plain, transferred = analyze(model, photo, None), analyze(model, photo, None, reference=ref)
    expected = model.analyze(photo, reference=model.reference_features(ref))
    assert torch.equal(transferred.preview.output, expected.output)
    assert torch.equal(full_prediction(transferred).output, expected.output)
    assert not torch.equal(plain.preview.output, transferred.preview.output)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="^reference photo: .*empty.jpg"):
        analyze(model, photo, None, reference=tmp_path / "empty.jpg")

    demo = build_app(model, None, max_pixels=1_000_000, concurrency=1)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        png = client.predict(handle_file(str(photo)), 1.0, handle_file(str(ref)), api_name="/colorize")
        assert np.array_equal(np.asarray(Image.open(png).convert("RGB")),
                              np.asarray(full_prediction(transferred).render(1.0).convert("RGB")))
        with pytest.raises(AppError) as e:
            client.predict(handle_file(str(photo)), 1.0, handle_file(str(tmp_path / "empty.jpg")), api_name="/colorize")
        assert str(e.value).startswith("reference photo: ") and "empty.jpg" in str(e.value) and "/" not in str(e.value)
    finally:
        demo.close()


def test_memory_stays_bounded_over_many_new_sessions(tiny_model, tmp_path):
    """Every call through the plain HTTP API is a new session, as a new visitor is: the server's
    resident memory grows by far less than the analyses of all of them (the cache keeps 4, and
    Gradio keeps the state of 50 sessions here, as ``launch_kwargs`` bounds it in the app)."""
    import gc

    import httpx
    import psutil

    from demo import launch_kwargs

    photo = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).resize((320, 240)).save(photo)
    per_session = analyze(tiny_model, photo, None).nbytes  # about 1 MB
    cache = AnalysisCache(max_items=4, max_bytes=8 * per_session)
    demo = build_app(tiny_model, None, max_pixels=10**6, concurrency=2, examples=[], cache=cache)
    port = _free_port()
    assert launch_kwargs(parser().parse_args([]))["state_session_capacity"] <= 2000
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False,
                state_session_capacity=50)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    process = psutil.Process()

    def rss() -> int:
        gc.collect()
        return process.memory_info().rss

    try:
        with open(photo, "rb") as f:
            uploaded = httpx.post(f"{url}gradio_api/upload", files={"files": f}, timeout=60).json()[0]
        payload = [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, 0.5]

        def new_sessions(n: int) -> None:
            for _ in range(n):
                line = _call(url, "colorize", payload)
                assert "coffee-color-T0.5.png" in line, line

        new_sessions(30)  # warm up: the allocator's pools, Gradio's caches
        before = rss()
        new_sessions(150)
        growth = rss() - before
        assert len(cache) == 4 and cache.nbytes <= 8 * per_session
        assert growth < 0.3 * 150 * per_session, f"{growth / 2**20:.0f} MB for 150 sessions"
    finally:
        demo.close()


def test_the_survey_is_prepared_in_the_background_and_the_tab_says_so(tmp_path, tiny_model, monkeypatch):
    """The app answers while the survey's photos are prepared: the tab says so (and opens the
    test when they are ready); a preparation that fails is one line there, not a dead app."""
    import threading

    import demo.survey.prepare as prepare_module
    from demo import setup_survey
    from demo.survey.ui import survey_intro

    tiny_model.save_pretrained(tmp_path / "tiny")
    (tmp_path / "photos").mkdir()
    for name in ("coffee", "chelsea", "astronaut"):
        Image.fromarray(getattr(data, name)()).resize((96, 64)).save(tmp_path / "photos" / f"{name}.jpg")
    release, real = threading.Event(), prepare_module.prepare_survey

    def slow_prepare(*args, **kwargs):
        assert release.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "prepare_survey", slow_prepare)
    argv = ["--model", str(tmp_path / "tiny"), "--survey", str(tmp_path / "survey"), "--practice", "1"]
    setup = setup_survey(parser().parse_args(argv + ["--survey-photos", str(tmp_path / "photos")]), tiny_model)
    assert not setup.ready and setup.runner is None
    assert "Preparing the Turing test's photos" in survey_intro(setup)
    build_app(tiny_model, setup, examples=[])  # the app is built (and served) meanwhile
    release.set()
    runner = setup.wait(300)
    assert setup.ready and runner.n_practice == 1 and runner.config.n_trials == 2
    assert "You will see 5 pairs: first 1 practice pair" in survey_intro(setup)  # 2 test pairs, 2 checks

    broken = setup_survey(parser().parse_args(argv + ["--survey-photos", str(tmp_path / "nothing")]), tiny_model)
    with pytest.raises(ValueError, match="^app.py: error: Turing test: photos: not a folder: "):
        broken.wait(60)
    assert survey_intro(broken).count("\n") == 1 and "The Turing test is not available: app.py: error" in survey_intro(broken)


def test_a_program_takes_the_turing_test_through_the_api(tmp_path, tiny_model):
    """gradio_client: /survey_start and /vote, one line for a vote without a session or with a
    bad side, practice feedback in the reply, every vote stored once, a session resumed by its id."""
    import time

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from demo import setup_survey
    from demo.survey.session import MIN_ANSWER_GAP_S

    tiny_model.save_pretrained(tmp_path / "tiny")
    (tmp_path / "photos").mkdir()
    for name in ("coffee", "chelsea", "astronaut"):
        Image.fromarray(getattr(data, name)()).resize((96, 64)).save(tmp_path / "photos" / f"{name}.jpg")
    args = parser().parse_args(["--model", str(tmp_path / "tiny"), "--survey", str(tmp_path / "survey"),
                                "--survey-photos", str(tmp_path / "photos"), "--practice", "1", "--attention", "1",
                                "--display-seconds", "0"])  # fmt: skip
    setup = setup_survey(args, tiny_model)
    runner = setup.wait(300)
    demo = build_app(tiny_model, setup, examples=[])
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        assert sorted(api["named_endpoints"]) == ["/colorize", "/render", "/survey_start", "/uncertainty", "/vote"]
        assert api["unnamed_endpoints"] == {}
        with pytest.raises(AppError, match="^No survey session: call /survey_start first.$"):
            client.predict("left", api_name="/vote")
        left, right, info = client.predict("", api_name="/survey_start")
        assert Image.open(left).size == Image.open(right).size and info["pair"] == 1 and info["kind"] == "practice"
        assert info["pairs"] == runner.n_practice + runner.n_test == 4
        with pytest.raises(AppError, match="^side must be 'left' or 'right', got 'up'$"):
            client.predict("up", api_name="/vote")
        replies = []
        while not info["done"]:
            time.sleep(2 * MIN_ANSWER_GAP_S)
            left, right, info = client.predict("left", api_name="/vote")
            replies.append(info)
        assert "correct" in replies[0] and all("correct" not in r for r in replies[1:])
        assert all(r["stored"] for r in replies) and left is None and info["test_answered"] == 3
        votes = runner.store.session_votes(info["session_id"])
        assert [v["kind"] for v in votes][0] == "practice" and len(votes) == 4
        with pytest.raises(AppError, match="^This session is over"):
            client.predict("left", api_name="/vote")
        resumed = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(info["session_id"], api_name="/survey_start")
        assert resumed[2]["done"] and resumed[2]["session_id"] == info["session_id"]
    finally:
        demo.close()
