"""End to end in a real browser: headless Chromium drives `python app.py` with a tiny model,
a prepared survey and a temporary SQLite database."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(cmd: list[str], env: dict, log_path: Path, url: str) -> subprocess.Popen:
    """Start ``python app.py ...`` and wait until it answers at ``url``."""
    log = open(log_path, "a")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"app did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.3)


def _answer(page, button: str) -> None:
    """Click an answer at a human pace: the server refuses a session's answers that come
    within MIN_ANSWER_GAP_S of the last one (scripted clicks), and a browser driven from
    here can click that fast on a quick machine."""
    from demo.survey.session import MIN_ANSWER_GAP_S

    page.wait_for_timeout(2000 * MIN_ANSWER_GAP_S)
    page.click(button)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def served_app(tmp_path_factory):
    """`python app.py` on a free localhost port: tiny model, a 4-photo survey (1 practice,
    3 test trials, 1 attention check, pairs shown 0.6 s), votes in a temp SQLite file."""
    from colorizer import Colorizer
    from demo.survey.prepare import prepare_survey

    root = tmp_path_factory.mktemp("e2e")
    Colorizer(width=0.125, input_size=64).save_pretrained(root / "tiny")
    photos = root / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(data, name)()).resize((160, 120)).save(photos / f"{name}.jpg")
    prepare_survey(photos, root / "survey", [f"tiny={root / 'tiny'}"], [0.38], size=96, progress=False)
    db_url = f"sqlite:///{root / 'votes.sqlite'}"
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "app.py", "--model", str(root / "tiny"), "--survey", str(root / "survey"), "--db", db_url,
           "--host", "127.0.0.1", "--port", str(port), "--trials", "3", "--practice", "1", "--attention", "1",
           "--display-seconds", "0.6"]  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    proc = _serve(cmd, env, root / "app.log", url)
    yield url, db_url, root
    _stop(proc)


@pytest.fixture(scope="module")
def page():
    """A headless Chromium page (no downloads: the system's chromium)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        # a context of its own, so that a test can open a second tab of the same browser (its storage)
        pg = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        pg.set_default_timeout(20_000)
        yield pg
        browser.close()


def test_colorize_turing_test_and_results(served_app, page):
    from demo.survey.storage import VoteStore

    url, db_url, root = served_app
    page.goto(url)

    # Colorize: upload, get the before/after pair, move the temperature, get a new result.
    photo = root / "upload.png"
    Image.fromarray(data.coffee()).resize((240, 160)).save(photo)
    page.locator("#upload input[type=file]").set_input_files(str(photo))
    result = page.locator("#result img")
    result.nth(1).wait_for()
    first_src = result.nth(1).evaluate("e => e.src")
    assert result.count() == 2 and "/gradio_api/file=" in first_src
    # one download, the full-resolution one: the slider keeps its fullscreen button, not its own download
    buttons = page.locator("#result button").evaluate_all("bs => bs.map(b => b.getAttribute('aria-label') || b.title)")
    assert buttons and not any("ownload" in (b or "") for b in buttons), buttons  # Gradio labels it "Download"
    number = page.locator("#temperature input[type=number]")
    number.fill("0.9")
    number.press("Enter")
    page.wait_for_function(
        "old => { const i = document.querySelectorAll('#result img'); return i.length == 2 && i[1].src != old }",
        arg=first_src,
    )
    # the full-resolution file is made on request, at the temperature on screen, and a slider move hides it
    page.locator("#render").click()
    page.locator("#download").wait_for(state="visible")
    assert "T = 0.9" in page.locator("#download").inner_text()
    number.fill("0.5")
    number.press("Enter")
    page.locator("#download").wait_for(state="hidden")
    page.locator("#render").click()
    page.get_by_text("Download full-resolution PNG (T = 0.5)").wait_for()

    # Turing test: one practice trial (with feedback), three test trials and one check.
    page.get_by_role("tab", name="Turing test").click()
    page.click("#survey-start")
    for i in range(5):
        img = page.locator(f'#survey-left[data-trial="{i}"]')
        img.wait_for(state="attached")
        if i == 1:  # the pair disappears after its display time
            page.wait_for_function("() => getComputedStyle(document.querySelector('#survey-left')).visibility == 'hidden'")
        if i == 0:
            assert "Practice pair 1 of 1" in page.locator("#survey-status").inner_text()
        if i == 1:
            assert "Test pair 1 of 4" in page.locator("#survey-status").inner_text()
        _answer(page, "#survey-left-button" if i % 2 == 0 else "#survey-right-button")
        if i == 0:  # practice: feedback on its own, the next pair when the participant continues
            page.wait_for_function(
                "() => document.querySelector('#survey-feedback').innerText.includes('the real photo was on the')"
            )
            page.locator("#survey-left-button").wait_for(state="hidden")
            page.click("#survey-continue")
        if i == 2:  # a reload mid-test: Start resumes this browser's session at the next pair
            page.wait_for_function("() => (document.querySelector('#survey-status')?.innerText || '').includes('Test pair 3')")
            page.reload()
            page.get_by_role("tab", name="Turing test").click()
            page.click("#survey-start")
            page.wait_for_function("() => (document.querySelector('#survey-status')?.innerText || '').includes('Test pair 3 of 4')")
    page.get_by_text("Thank you").wait_for()
    page.locator("#survey-restart").wait_for(state="visible")  # starting over is the participant's choice

    votes = VoteStore(db_url).votes()
    assert Counter(v["kind"] for v in votes) == {"practice": 1, "trial": 3, "attention": 1}
    assert len({v["session_id"] for v in votes}) == 1
    assert [v["answer"] for v in votes] == ["left", "right", "left", "right", "left"]
    assert all(v["response_ms"] > 0 for v in votes)
    fooled = sum(v["fooled"] for v in votes if v["kind"] == "trial")

    # Results: the votes are counted, and the session id is nowhere on the page.
    page.get_by_role("tab", name="Results").click()
    page.click("#results-refresh")
    summary = page.locator("#results-summary")
    page.wait_for_function("() => document.querySelector('#results-summary').innerText.includes('Participants')")
    text = summary.inner_text()
    assert f"{fooled}/3)" in text and "with test votes: 1" in text and "1 complete, 0 unfinished" in text
    assert votes[0]["session_id"] not in page.content()
    page.locator("#results-csv").wait_for(state="visible")


def test_phone_layout_puts_the_result_first_and_the_pair_side_by_side(served_app, page, tmp_path):
    """A 390x844 phone viewport: after an upload the result is above the controls (visible
    without scrolling), and the survey's two photos stay side by side, as their names say."""
    url, _, _ = served_app
    phone = page.context.browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True,
                                         has_touch=True)
    phone.set_default_timeout(20_000)
    try:
        phone.goto(url)
        photo = tmp_path / "upload.png"
        Image.fromarray(data.chelsea()).resize((300, 200)).save(photo)
        phone.locator("#upload input[type=file]").set_input_files(str(photo))
        phone.locator("#result img").nth(1).wait_for()
        result, controls = phone.locator("#result").bounding_box(), phone.locator("#upload").bounding_box()
        assert result["y"] < controls["y"] and result["y"] < 844
        phone.screenshot(path=str(tmp_path / "phone-colorize.png"))
        # the examples path: scroll down to them, tap one, and the page brings its result into view
        phone.goto(url)
        example = phone.locator("button.gallery-item").first
        example.scroll_into_view_if_needed()
        assert phone.locator("#result").bounding_box()["y"] < 0  # the result is above the screen now
        example.tap()
        phone.locator("#result img").nth(1).wait_for()
        phone.wait_for_function("() => { const r = document.querySelector('#result').getBoundingClientRect();"
                                " return r.top >= -1 && r.top < innerHeight / 2; }")  # fmt: skip
        phone.get_by_role("tab", name="Turing test").click()
        phone.click("#survey-start")
        phone.locator("#survey-left").wait_for(state="attached")
        left, right = phone.locator("#survey-left").bounding_box(), phone.locator("#survey-right").bounding_box()
        assert abs(left["y"] - right["y"]) < 2 and left["x"] + left["width"] <= right["x"] + 1
        assert right["x"] + right["width"] <= 390
        lb, rb = phone.locator("#survey-left-button").bounding_box(), phone.locator("#survey-right-button").bounding_box()
        assert abs(lb["y"] - rb["y"]) < 2 and lb["x"] < rb["x"]  # the buttons side by side too
        phone.screenshot(path=str(tmp_path / "phone-survey.png"))
    finally:
        phone.close()


def test_out_of_the_box_turing_test_survives_a_server_restart(tmp_path, page):
    """`python app.py` with no survey option: the Turing test runs on the shipped photos (prepared
    into the cache folder); the server is restarted mid-test and the participant, after a reload,
    resumes their session; votes land in SQLite in the cache folder."""
    from colorizer import Colorizer
    from demo import SURVEY_PHOTOS
    from demo.survey.storage import VoteStore, sqlite_url

    Colorizer(width=0.125, input_size=64).save_pretrained(tmp_path / "tiny")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               COLORIZER_CACHE=str(tmp_path / "cache"))  # fmt: skip
    cmd = [sys.executable, "app.py", "--model", str(tmp_path / "tiny"), "--host", "127.0.0.1", "--port", str(port),
           "--trials", "3", "--practice", "1", "--attention", "1", "--display-seconds", "0"]  # fmt: skip
    proc = _serve(cmd, env, tmp_path / "app.log", url)
    try:
        page.goto(url)  # at once: the photos are prepared in the background, the tab opens the test when ready
        photo = tmp_path / "upload.png"
        Image.fromarray(data.coffee()).resize((240, 160)).save(photo)
        page.locator("#upload input[type=file]").set_input_files(str(photo))
        page.locator("#result img").nth(1).wait_for()
        page.get_by_role("tab", name="Turing test").click()
        page.get_by_text("You will see 5 pairs: first 1 practice pair").wait_for(timeout=300_000)
        page.click("#survey-start")
        page.locator('#survey-left[data-trial="0"]').wait_for(state="attached")
        _answer(page, "#survey-left-button")
        page.click("#survey-continue")
        page.locator('#survey-left[data-trial="1"]').wait_for(state="attached")
        _answer(page, "#survey-right-button")
        page.locator('#survey-left[data-trial="2"]').wait_for(state="attached")
        _stop(proc)  # the server goes away mid-test ...
        proc = _serve(cmd, env, tmp_path / "app.log", url)  # ... and comes back (the survey is cached)
        # no reload: the next click finds the session gone, picks it up from the browser's id and says so
        _answer(page, "#survey-left-button")
        page.get_by_text("The server was restarted").wait_for(timeout=60_000)
        assert "Test pair 2 of 4" in page.locator("#survey-status").inner_text()  # the same pair again
        # the Colorize tab of the same page: the temperature re-renders (its photo analysed again)
        page.get_by_role("tab", name="Colorize").click()
        old_src = page.locator("#result img").nth(1).evaluate("e => e.src")
        number = page.locator("#temperature input[type=number]")
        number.fill("0.9")
        number.press("Enter")
        page.wait_for_function("old => document.querySelectorAll('#result img')[1].src != old", arg=old_src)
        page.locator("#render").click()
        page.get_by_text("Download full-resolution PNG (T = 0.9)").wait_for()
        page.get_by_role("tab", name="Turing test").click()
        for i in (2, 3, 4):
            page.locator(f'#survey-left[data-trial="{i}"]').wait_for(state="attached")
            _answer(page, "#survey-left-button")
        page.get_by_text("Thank you").wait_for()
        page.screenshot(path=str(tmp_path / "turing-test-done.png"))
    finally:
        _stop(proc)
    votes = VoteStore(sqlite_url(tmp_path / "cache" / "survey" / "votes.sqlite")).votes()
    assert len(votes) == 5 and len({v["session_id"] for v in votes}) == 1  # one participant, not two
    shipped = {p.stem for p in SURVEY_PHOTOS.glob("*.jpg")}
    assert {v["photo"] for v in votes} <= shipped
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def test_a_vote_while_the_database_is_down_waits_for_it(tmp_path, page, postgres_server):
    """PostgreSQL goes down mid-test: the participant's click gets a clear message, the pair
    stays, and the same click is stored once the database is back."""
    from colorizer import Colorizer
    from demo.survey.prepare import prepare_survey
    from demo.survey.storage import VoteStore

    Colorizer(width=0.125, input_size=64).save_pretrained(tmp_path / "tiny")
    (tmp_path / "photos").mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).resize((120, 90)).save(tmp_path / "photos" / f"{name}.jpg")
    prepare_survey(tmp_path / "photos", tmp_path / "survey", [f"tiny={tmp_path / 'tiny'}"], [0.38], size=64,
                   progress=False)  # fmt: skip
    store = VoteStore(postgres_server.url)
    before = store.count()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "app.py", "--model", str(tmp_path / "tiny"), "--survey", str(tmp_path / "survey"),
           "--db", postgres_server.url, "--host", "127.0.0.1", "--port", str(port), "--trials", "2",
           "--practice", "0", "--attention", "0", "--display-seconds", "0"]  # fmt: skip
    proc = _serve(cmd, env, tmp_path / "app.log", url)
    try:
        page.goto(url)
        page.get_by_role("tab", name="Turing test").click()
        page.click("#survey-start")
        page.locator('#survey-left[data-trial="0"]').wait_for(state="attached")
        postgres_server.stop()
        try:
            _answer(page, "#survey-left-button")
            page.get_by_text("Your answer was not saved").wait_for()
            assert "Test pair 1 of 2" in page.locator("#survey-status").inner_text()  # the pair stays
            # the same participant in a second tab (the browser's session id): Start says what is wrong
            other = page.context.new_page()
            other.goto(url)
            other.get_by_role("tab", name="Turing test").click()
            other.click("#survey-start")
            other.get_by_text("Please click Start again in a moment").wait_for()
            other.close()
            # the Results tab says what is wrong in one line, and works again once the database is back
            page.get_by_role("tab", name="Results").click()
            page.click("#results-refresh")
            page.get_by_text("The survey's vote database cannot be reached right now.").wait_for()
        finally:
            postgres_server.start()
        page.click("#results-refresh")
        page.wait_for_function("() => document.querySelector('#results-summary').innerText.includes('Participants')")
        page.get_by_role("tab", name="Turing test").click()
        time.sleep(0.2)
        _answer(page, "#survey-left-button")
        page.locator('#survey-left[data-trial="1"]').wait_for(state="attached")
        _answer(page, "#survey-right-button")
        page.get_by_text("Thank you").wait_for()
    finally:
        _stop(proc)
    assert store.count() == before + 2
    log = (tmp_path / "app.log").read_text()
    assert "vote not stored" in log and "results not shown" in log and "session not resumed" in log
    assert "Traceback" not in log
