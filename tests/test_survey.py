"""Survey logic: preparing the images, sampling trials, one participant's session, the CLI."""

import hashlib
import json
import logging
import os
import shutil
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import torch

from colorizer import Colorizer
from colorizer.color import rgb_to_l
from demo.survey.__main__ import main as survey_cli
from demo.survey.prepare import (
    MANIFEST,
    attention_image,
    load_survey,
    parse_model_spec,
    prepare_survey,
    weights_digest,
)
from demo.survey.sampling import PRACTICE_PREFIX, Pair, sample_session
from demo.survey.session import SurveyConfig, SurveyRunner
from demo.survey.storage import VoteStore, sqlite_url
from demo.survey.ui import pair_html


# ----------------------------------------------------------------------------- sampling
def _pairs(n_photos=10, conditions=(("A", 0.38), ("A", 1.0), ("B", None))):
    return [
        Pair(f"p{i}|{m}|T{t}", f"p{i}", Path(f"real/p{i}.png"), Path(f"fake/{m}/{t}/p{i}.png"), m, t)
        for i in range(n_photos)
        for m, t in conditions
    ]


def _checks(n_photos=10):
    return [Pair(f"p{i}|check:hue", f"p{i}", Path("r"), Path("f"), "hue", None, "attention") for i in range(n_photos)]


@pytest.mark.parametrize("seed", range(20))
def test_sides_are_balanced_in_every_block(seed):
    trials = sample_session(_pairs(), _checks(), n_trials=7, n_practice=3, n_attention=2, seed=seed)
    practice = [t for t in trials if t.kind == "practice"]
    test = [t for t in trials if t.kind != "practice"]
    for block in (practice, test):
        left = sum(t.real_side == "left" for t in block)
        assert abs(left - (len(block) - left)) <= 1
    assert all((t.left, t.right) == ((t.pair.real, t.pair.fake) if t.real_side == "left" else (t.pair.fake, t.pair.real))
               for t in trials)  # fmt: skip


def test_sides_are_random_not_alternating():
    orders = {tuple(t.real_side for t in sample_session(_pairs(), n_trials=8, n_practice=0, seed=s)) for s in range(30)}
    assert len(orders) > 10


def test_session_composition():
    trials = sample_session(_pairs(), _checks(), n_trials=8, n_practice=2, n_attention=3, seed=1)
    kinds = [t.kind for t in trials]
    assert kinds[:2] == ["practice", "practice"]
    assert Counter(kinds) == {"practice": 2, "trial": 8, "attention": 3}
    assert kinds[2] != "attention"  # checks never open the test block
    test = [t for t in trials if t.kind == "trial"]
    assert len({t.pair.photo for t in test}) == 8  # one photo at most once, with 10 photos to draw from
    ids = [t.pair_id for t in trials]
    assert len(set(ids)) == len(ids)
    assert all(t.pair_id.startswith(PRACTICE_PREFIX) for t in trials[:2])
    practice_photos = {t.pair.photo for t in trials[:2]}
    assert practice_photos.isdisjoint({t.pair.photo for t in test})  # 10 photos: practice uses the 2 spare ones
    assert len({t.pair.photo for t in trials if t.kind == "attention"}) == 3


def test_conditions_are_balanced():
    trials = sample_session(_pairs(n_photos=12), n_trials=9, n_practice=0, seed=3)
    counts = Counter(t.pair.condition for t in trials)
    assert sorted(counts.values()) == [3, 3, 3]


def test_counts_are_capped_and_pairs_never_repeat():
    pairs = _pairs(n_photos=2)  # 6 pairs only
    trials = sample_session(pairs, _checks(2), n_trials=50, n_practice=0, n_attention=9, seed=0)
    test = [t for t in trials if t.kind == "trial"]
    assert len(test) == 6 and len({t.pair_id for t in test}) == 6
    assert sum(t.kind == "attention" for t in trials) == 2


@pytest.mark.parametrize("n_photos", [3, 5, 6, 12])
@pytest.mark.parametrize("seed", range(5))
def test_practice_never_shows_a_test_photo(n_photos, seed):
    """Practice feedback tells which photo is real: it must never be a photo of the test block.
    5 test trials: 3 or 5 photos leave no spare photo (no practice), 6 leave one (its three
    conditions), 12 leave plenty."""
    trials = sample_session(_pairs(n_photos), n_trials=5, n_practice=4, seed=seed)
    practice = [t for t in trials if t.kind == "practice"]
    test_photos = {t.pair.photo for t in trials if t.kind == "trial"}
    assert {t.pair.photo for t in practice}.isdisjoint(test_photos)
    assert len(practice) == {3: 0, 5: 0, 6: 3, 12: 4}[n_photos]
    assert sum(t.kind == "trial" for t in trials) == 5


def test_sampling_is_reproducible_and_validated():
    a = sample_session(_pairs(), _checks(), 5, 2, 1, seed=42)
    b = sample_session(_pairs(), _checks(), 5, 2, 1, seed=42)
    assert a == b
    with pytest.raises(ValueError, match="prepare"):
        sample_session([], n_trials=3)
    with pytest.raises(ValueError, match="practice=-1"):
        sample_session(_pairs(), n_trials=3, n_practice=-1)


# ----------------------------------------------------------------------------- preparing
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny untrained Colorizer saved as a model folder."""
    path = tmp_path_factory.mktemp("tiny-model")
    Colorizer(width=0.125, input_size=64).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Three colour photos (one in a subfolder) and one grayscale photo, from scikit-image."""
    root = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(root / "astronaut.jpg")
    Image.fromarray(data.coffee()).save(root / "coffee.png")
    (root / "cats").mkdir()
    Image.fromarray(data.chelsea()).save(root / "cats" / "chelsea.jpg")
    Image.fromarray(data.camera()).save(root / "camera.png")  # grayscale: skipped
    (root / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory, tiny_model_dir, photo_dir):
    """A survey prepared with the tiny model at two temperatures, 96-pixel images."""
    out = tmp_path_factory.mktemp("survey")
    prepare_survey(photo_dir, out, [f"tiny={tiny_model_dir}"], [0.2, 0.9], size=96, progress=False)
    return out


def test_prepare_writes_pairs_with_equal_lightness(survey_dir):
    survey = load_survey(survey_dir)
    assert survey.photos == ["astronaut", "cats-chelsea", "coffee"]
    assert len(survey.pairs) == 6 and len(survey.checks) == 6
    manifest = json.loads((survey_dir / MANIFEST).read_text())
    assert manifest["skipped"] == ["camera.png (grayscale)"]
    for pair in survey.pairs + survey.checks:
        real, fake = Image.open(pair.real), Image.open(pair.fake)
        assert real.size == fake.size and max(real.size) == 96 and real.mode == fake.mode == "RGB"
        l_real = rgb_to_l(_tensor(real))
        l_fake = rgb_to_l(_tensor(fake))
        if pair.model != "swap":  # the colorization and the hue check keep the real photo's L
            assert (l_real - l_fake).abs().max() < 1.0
        assert np.abs(np.asarray(real, np.int16) - np.asarray(fake, np.int16)).max() > 10  # colours differ
    by_t = {p.temperature for p in survey.pairs}
    assert by_t == {0.2, 0.9}
    a = [p for p in survey.pairs if p.photo == "coffee"]
    assert not np.array_equal(np.asarray(Image.open(a[0].fake)), np.asarray(Image.open(a[1].fake)))


def _tensor(img):
    import torch

    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None]


def test_prepare_is_cached(survey_dir, photo_dir, tiny_model_dir, tmp_path, capsys):
    survey_dir = shutil.copytree(survey_dir, tmp_path / "survey")  # a copy: other tests keep theirs intact
    fake = next(survey_dir.glob("fake/tiny/T0.2/*.png"))
    os.utime(fake, (1_000_000, 1_000_000))
    prepare_survey(photo_dir, survey_dir, [f"tiny={tiny_model_dir}"], [0.2, 0.9], size=96, progress=False)
    assert fake.stat().st_mtime == 1_000_000  # kept, not remade
    fake.unlink()
    prepare_survey(photo_dir, survey_dir, [f"tiny={tiny_model_dir}"], [0.2, 0.9], size=96, progress=False)
    assert fake.is_file()  # a missing image is made again
    assert "weights changed" not in capsys.readouterr().err


def test_retrained_model_remakes_its_images(tmp_path, photo_dir, capsys):
    """New weights in the same model folder: its colorizations are remade, and their pair
    ids (which carry the weights' digest) differ from the old ones, so votes never mix."""
    model_dir, out = tmp_path / "model", tmp_path / "survey"
    torch.manual_seed(0)
    Colorizer(width=0.125, input_size=64).save_pretrained(model_dir)
    prepare_survey(photo_dir, out, [f"m={model_dir}"], [0.5], size=48, checks=(), progress=False)
    old = load_survey(out)
    old_pixels = {p.pair_id: np.asarray(Image.open(p.fake)).copy() for p in old.pairs}
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()[:12]
    assert weights_digest(str(model_dir)) == digest
    assert json.loads((out / MANIFEST).read_text())["weights"] == {"m": digest}
    assert all(p.pair_id.endswith(f"|{digest}") for p in old.pairs)
    capsys.readouterr()

    torch.manual_seed(1)  # "retrained": other weights, same folder and label
    Colorizer(width=0.125, input_size=64).save_pretrained(model_dir)
    prepare_survey(photo_dir, out, [f"m={model_dir}"], [0.5], size=48, checks=(), progress=False)
    assert "survey: model m: weights changed" in capsys.readouterr().err
    new = load_survey(out)
    assert {p.photo for p in new.pairs} == {p.photo for p in old.pairs}
    assert not {p.pair_id for p in new.pairs} & set(old_pixels)  # votes of old and new weights never share a pair
    for p in new.pairs:
        before = old_pixels[p.pair_id.rsplit("|", 1)[0] + f"|{digest}"]
        assert not np.array_equal(np.asarray(Image.open(p.fake)), before)  # remade with the new weights


def test_attention_images_are_obviously_wrong():
    real = Image.fromarray(data.coffee()).resize((64, 43))
    swap = np.asarray(attention_image(real, "swap"))
    assert np.array_equal(swap, np.asarray(real)[:, :, ::-1])
    hue = attention_image(real, "hue")
    assert np.abs(np.asarray(hue, np.int16) - np.asarray(real, np.int16)).mean() > 10
    with pytest.raises(ValueError, match="'blur'"):
        attention_image(real, "blur")


def test_prepare_and_load_errors(tmp_path, photo_dir):
    with pytest.raises(ValueError, match="not a folder"):
        prepare_survey(tmp_path / "nope", tmp_path / "out")
    for bad in (1.5, float("nan"), "0.3"):  # the model's one rule: a finite number in [0, 1]
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            prepare_survey(photo_dir, tmp_path / "out", temperatures=[bad])
    with pytest.raises(ValueError, match="at least one"):
        prepare_survey(photo_dir, tmp_path / "out", temperatures=[])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        prepare_survey(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="survey.json"):
        load_survey(tmp_path)


def test_model_specs(tiny_model_dir):
    assert (parse_model_spec("default").label, parse_model_spec("default").source) == ("default", "default")
    spec = parse_model_spec(f"tiny={tiny_model_dir}")
    assert (spec.label, spec.source) == ("tiny", str(tiny_model_dir))
    assert parse_model_spec(str(tiny_model_dir)).label == tiny_model_dir.name
    assert parse_model_spec("user/repo").label == "user-repo"
    with pytest.raises(ValueError, match="LABEL=SOURCE"):
        parse_model_spec("x=")


# ----------------------------------------------------------------------------- a participant
def test_a_participant_session(survey_dir, tmp_path):
    store = VoteStore(sqlite_url(tmp_path / "votes.sqlite"))
    runner = SurveyRunner(load_survey(survey_dir), store, SurveyConfig(n_trials=2, n_practice=1, n_attention=1))
    state = runner.start(seed=0)
    assert len(state.trials) == 4 and state.n_practice == 1
    t0 = 100.0
    answers = []
    while not state.done:
        runner.shown(state, now=t0)
        trial = state.current
        wrong = "right" if trial.real_side == "left" else "left"
        answers.append(runner.answer(state, wrong, now=t0 + 0.75))  # always picks the colorized photo
        t0 += 2.0
    assert all(a.stored and not a.correct and a.response_ms == 750 for a in answers)
    assert (state.answered, state.fooled) == (2, 2)
    assert (state.n_test, state.test_answered, state.test_right) == (3, 3, 0)  # attention checks count here
    assert (runner.n_practice, runner.n_test) == (1, 3)
    votes = store.votes()
    assert [v["kind"] for v in votes] == [t.kind for t in state.trials]
    assert all(v["fooled"] and v["session_id"] == state.session_id for v in votes)
    assert votes[0]["pair_id"].startswith("practice|")
    with pytest.raises(ValueError, match="over"):
        runner.answer(state, "left")
    other = runner.start()
    assert other.session_id != state.session_id and len(other.session_id) == 32


def test_too_few_photos_for_practice_is_noted(survey_dir, caplog):
    """3 photos, 3 test trials: no photo is left to practise on without giving answers away."""
    with caplog.at_level(logging.WARNING, logger="demo.survey.session"):
        runner = SurveyRunner(load_survey(survey_dir), VoteStore("sqlite://"), SurveyConfig(3, 2, 0))
    assert runner.n_practice == 0 and runner.start(seed=5).n_practice == 0
    assert "too few" in caplog.text and "0 practice trials" in caplog.text


def test_the_intro_promises_what_the_session_holds():
    from demo.survey.ui import intro_text

    text = intro_text(0, 8, "Which photo is the **real** one?", "Take the time you need.")
    assert "8 test pairs" in text and "no practice pairs" in text and "first" not in text
    text = intro_text(1, 6, "Which?", "")
    assert "7 pairs: first 1 practice pair," in text and "then 6 test pairs" in text


def test_a_repeated_answer_is_not_stored_twice(survey_dir, tmp_path):
    store = VoteStore(sqlite_url(tmp_path / "votes.sqlite"))
    runner = SurveyRunner(load_survey(survey_dir), store, SurveyConfig(n_trials=2, n_practice=0, n_attention=0))
    state = runner.start(seed=1)
    replay = type(state)(state.session_id, state.trials)  # e.g. the same page submitted twice
    assert runner.answer(state, "left").stored
    assert not runner.answer(replay, "right").stored
    assert store.count() == 1 and state.answered == 1
    with pytest.raises(ValueError, match="'up'"):
        runner.answer(state, "up")


def test_config_is_validated():
    with pytest.raises(ValueError, match="'which'"):
        SurveyConfig(question="which")
    with pytest.raises(ValueError, match="-1"):
        SurveyConfig(display_seconds=-1)
    with pytest.raises(ValueError, match="n_trials"):
        SurveyConfig(n_trials=0)


def test_pair_html_hides_after_the_display_time(survey_dir, tmp_path):
    runner = SurveyRunner(load_survey(survey_dir), VoteStore("sqlite://"), SurveyConfig(n_trials=2, n_practice=0, n_attention=0))
    state = runner.start(seed=0)
    first = pair_html(state, 1.0)
    assert first.count("data:image/png;base64,") == 2
    assert 'id="survey-left"' in first and 'id="survey-right"' in first
    assert "survey-hide-a 0s step-end 1s forwards" in first
    runner.answer(state, "left")
    assert "survey-hide-b 0s step-end 1s forwards" in pair_html(state, 1.0)  # a new name restarts the clock
    assert "animation" not in pair_html(state, 0).split("</style>")[1]  # 0: shown until answered


# ----------------------------------------------------------------------------- command line
def test_cli_prepare_and_results(tmp_path, photo_dir, tiny_model_dir, capsys):
    out = tmp_path / "survey"
    survey_cli(["prepare", "--photos", str(photo_dir), "--out", str(out), "--model", str(tiny_model_dir),
                "--temperature", "0.5", "--size", "64", "--checks", "swap"])  # fmt: skip
    assert "3 photos, 3 pairs, 3 checks" in capsys.readouterr().out
    store = VoteStore(sqlite_url(out / "votes.sqlite"))
    pair = load_survey(out).pairs[0]
    store.record(session_id="s", pair_id=pair.pair_id, kind="trial", photo=pair.photo, model=pair.model,
                 temperature=pair.temperature, question="real", real_side="left", answer="right", response_ms=10)  # fmt: skip
    survey_cli(["results", "--survey", str(out), "--csv", str(tmp_path / "v.csv")])
    printed = capsys.readouterr().out
    assert "1/1" in printed and "100.0%" in printed
    assert (tmp_path / "v.csv").read_text().count("\n") == 2
    err = _cli_error(capsys, ["prepare", "--photos", str(tmp_path / "nope"), "--out", str(out)])
    assert "not a folder" in err


def _cli_error(capsys, argv) -> str:
    """The survey CLI must exit with status 2 and one error line (after any progress bars), no traceback."""
    with pytest.raises(SystemExit) as e:
        survey_cli(argv)
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-1]
    assert e.value.code == 2 and last.startswith("python -m demo.survey: error: ") and "Traceback" not in err, err
    return last


def test_cli_errors_are_one_line(tmp_path, photo_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    err = _cli_error(capsys, ["results", "--db", f"postgresql+psycopg://u:s3cret-pw@127.0.0.1:{port}/db"])
    assert "u:***@127.0.0.1" in err and "s3cret-pw" not in err
    err = _cli_error(capsys, ["results", "--db", "mysql+nosuchdriver://u:pw@localhost/db"])
    assert "mysql+nosuchdriver" in err
    bad = tmp_path / "mismatch"  # weights for one width, a config for another
    Colorizer(width=0.125, input_size=64).save_pretrained(bad)
    (bad / "config.json").write_text(json.dumps({**json.loads((bad / "config.json").read_text()), "width": 0.25}))
    err = _cli_error(capsys, ["prepare", "--photos", str(photo_dir), "--out", str(tmp_path / "s"), "--model", str(bad)])
    assert f"model {bad}: " in err and "size mismatch" in err


def test_a_vote_while_the_database_is_down_is_kept_for_a_retry(survey_dir, tmp_path):
    """The database goes away: the answer raises StoreUnavailable (one line), the trial
    stays where it was, and the same answer is stored once the database is back."""
    import shutil

    from demo.survey.storage import StoreUnavailable

    db = tmp_path / "db" / "votes.sqlite"
    store = VoteStore(sqlite_url(db))
    runner = SurveyRunner(load_survey(survey_dir), store, SurveyConfig(n_trials=2, n_practice=0, n_attention=0))
    state = runner.start(seed=0)
    store.engine.dispose()
    shutil.move(tmp_path / "db", tmp_path / "away")
    (tmp_path / "db").mkdir()
    db.mkdir()  # a folder where the database file was: sqlite cannot open it
    with pytest.raises(StoreUnavailable, match="cannot store votes now") as e:
        runner.answer(state, "left")
    assert "\n" not in str(e.value) and state.index == 0 and state.test_answered == 0
    shutil.rmtree(tmp_path / "db")
    shutil.move(tmp_path / "away", tmp_path / "db")
    store.engine.dispose()
    assert runner.answer(state, "left").stored and state.index == 1 and store.count() == 1


def test_concurrent_clicks_on_one_trial_store_one_vote_and_advance_once(survey_dir, tmp_path):
    """Six clicks for the trial on screen at once: one vote, one step; a click for a trial the
    screen has left is ignored, and one faster than MIN_ANSWER_GAP_S is refused (the trial stays)."""
    from concurrent.futures import ThreadPoolExecutor

    from demo.survey.session import MIN_ANSWER_GAP_S, AnswerTooSoon

    store = VoteStore(sqlite_url(tmp_path / "votes.sqlite"))
    runner = SurveyRunner(load_survey(survey_dir), store, SurveyConfig(n_trials=3, n_practice=0, n_attention=0))
    state = runner.start()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda side: runner.answer(state, side, index=0), ["left", "right"] * 3))
    assert sum(a is not None for a in answers) == 1 and state.index == 1 and store.count() == 1
    assert runner.answer(state, "left", index=0) is None  # the screen's trial is gone: ignored
    t = state.last_answer_at
    with pytest.raises(AnswerTooSoon):
        runner.answer(state, "left", now=t + MIN_ANSWER_GAP_S / 2, index=1)
    assert state.index == 1 and store.count() == 1
    assert runner.answer(state, "left", now=t + 1.0, index=1).stored and state.index == 2 and store.count() == 2


def test_a_session_resumes_from_its_id_after_a_restart(survey_dir, tmp_path):
    """The browser keeps the session id; a new runner (a restarted server) on the same database
    rebuilds the trials from the id and continues after the last stored vote."""
    db = sqlite_url(tmp_path / "votes.sqlite")
    config = SurveyConfig(n_trials=2, n_practice=1, n_attention=1)
    runner = SurveyRunner(load_survey(survey_dir), VoteStore(db), config)
    state = runner.start()
    for i in range(2):
        runner.answer(state, state.current.real_side, now=10.0 + i)
    again = SurveyRunner(load_survey(survey_dir), VoteStore(db), config).resume(state.session_id)
    assert again.session_id == state.session_id and again.index == 2
    assert [t.pair_id for t in again.trials] == [t.pair_id for t in state.trials]
    assert (again.test_answered, again.test_right) == (state.test_answered, state.test_right) == (1, 1)
    for bad in (None, "", "x" * 32, "0" * 31, "retake-" + "z" * 32, "../" + "0" * 32):
        assert runner.resume(bad) is None
    other = SurveyRunner(load_survey(survey_dir), VoteStore(sqlite_url(tmp_path / "other.sqlite")), config)
    assert other.resume(state.session_id).index == 0  # known shape, no votes there yet: from the start
    retake = runner.start(retake=True)
    assert retake.session_id.startswith("retake-") and runner.resume(retake.session_id) is not None
