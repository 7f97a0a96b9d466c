"""Ratings stuffing (issue #19, defect 3) and typed study inputs (defect 9).

A real Gradio server on 127.0.0.1 with the study tab, driven by gradio_client through the
named endpoints (and by Chromium for the invitation link); a real SQLite file. Then the
screening that notices scripted raters, on simulated frames.
"""

from __future__ import annotations

import argparse
import logging
import re
import sqlite3
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import select, update

from conftest import CHROMIUM_ARGS, free_port
from survey.study import db, prepare, store, study_tab
from survey.analysis import report, screening, stats
from survey.study.admission import client_key
from survey.analysis.simulate import simulate_study
from survey import ratings as contract

STUDY = "stuffing"
KEY = "invite-5f2b9c1e77"
TRACEBACK_WORDS = ("object has no attribute", "Traceback", "NoneType", "TypeError", "sqlite", "survey/")


def photos() -> dict[str, Image.Image]:
    y, x = np.mgrid[0:40, 0:48]
    return {f"photo{i}": Image.fromarray((127.5 + 127 * np.stack(
        [np.sin(x / (3 + i) + c) * np.cos(y / (4 + c)) for c in range(3)], -1)).astype(np.uint8))
        for i in range(3)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """One prepared study (3 images x nearest/bicubic/hr, no calibration); each test copies it."""
    root = tmp_path_factory.mktemp("stuffing")
    app_dir = root / "var"
    db_path = root / "study.sqlite"
    prepare.prepare_from_hr(db_url=f"sqlite:///{db_path}", app_dir=app_dir, study=STUDY, hr_images=photos(),
                            methods=["nearest", "bicubic", "hr"], repeats=1, calibration_images=0)
    db.dispose_engine(f"sqlite:///{db_path}")
    return {"app_dir": app_dir, "db_path": db_path}


@contextmanager
def serve(prepared: dict, tmp_path, **limits):
    """The study tab alone on a free loopback port, on a fresh copy of the prepared database."""
    import gradio as gr
    from gradio_client import Client

    tmp_path.mkdir(parents=True, exist_ok=True)
    db_path = tmp_path / "study.sqlite"
    source, copy = sqlite3.connect(prepared["db_path"]), sqlite3.connect(db_path)
    source.backup(copy)
    source.close()
    copy.close()
    db_url = f"sqlite:///{db_path}"
    with gr.Blocks() as demo:
        with gr.Tab("MOS study"):
            study_tab.build_study_tab(db_url=db_url, app_dir=prepared["app_dir"], study=STUDY, **limits)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        yield Client(url, verbose=False, download_files=False), db_path, url
    finally:
        demo.close()
        db.dispose_engine(db_url)


def count(db_path, table: str) -> int:
    with sqlite3.connect(db_path) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def refused(answer: dict, *words: str) -> bool:
    return not answer["ok"] and all(w in answer["message"] for w in words) and not any(
        t in answer["message"] for t in TRACEBACK_WORDS)


# ---------------------------------------------------------------- the invitation key


@pytest.mark.e2e  # a server
def test_new_raters_need_the_join_key_and_joined_raters_resume_without_it(prepared, tmp_path):
    with serve(prepared, tmp_path, join_key=KEY, joins_per_hour=0, min_rating_ms=0) as (client, db_path, _):
        assert refused(client.predict("", True, api_name="/study_join"), "invitation link")
        assert refused(client.predict("", True, "invite-5f2b9c1e78", api_name="/study_join"), "not valid")
        assert refused(client.predict("", True, KEY[:-1], api_name="/study_join"), "not valid")
        assert count(db_path, "raters") == 0
        joined = client.predict("", True, KEY, api_name="/study_join")
        assert joined["ok"] and joined["status"] == "joined" and count(db_path, "raters") == 1
        resumed = client.predict(joined["code"], False, api_name="/study_join")
        assert resumed["ok"] and resumed["status"] == "resumed"
        assert client.predict(joined["code"], api_name="/study_next")["ok"]
        # A code that never joined this study (made elsewhere) still needs the invitation.
        engine = db.get_engine(f"sqlite:///{db_path}")
        outsider = store.new_rater(engine, consent=True)
        assert refused(client.predict(outsider, False, api_name="/study_join"), "invitation link")
        assert client.predict(outsider, False, KEY, api_name="/study_join")["ok"]


@pytest.mark.e2e  # a server
def test_an_open_study_needs_no_key(prepared, tmp_path):
    with serve(prepared, tmp_path, joins_per_hour=0, min_rating_ms=0) as (client, db_path, _):
        assert client.predict("", True, api_name="/study_join")["ok"]
        assert client.predict("", True, "anything", api_name="/study_join")["ok"]
        assert count(db_path, "raters") == 2


def test_bad_join_keys_are_refused_when_the_tab_is_built():
    for key in ("short", " padded-key-123 ", 12345678):
        with pytest.raises(ValueError, match="at least 8 characters"):
            study_tab.check_join_key(key)
    assert study_tab.check_join_key("") is None and study_tab.check_join_key(None) is None
    assert study_tab.check_join_key(KEY) == KEY


def test_join_key_and_limits_are_command_line_options(monkeypatch):
    def parse(*argv: str) -> dict:
        parser = argparse.ArgumentParser()
        study_tab.add_limit_arguments(parser)
        return study_tab.limit_options(parser, parser.parse_args(list(argv)))

    assert parse() == {"join_key": None, "joins_per_hour": 30, "min_rating_ms": 300}
    assert parse("--join-key", KEY, "--joins-per-hour", "0", "--min-rating-ms", "0") == {
        "join_key": KEY, "joins_per_hour": 0, "min_rating_ms": 0}
    monkeypatch.setenv("SURVEY_JOIN_KEY", KEY)
    monkeypatch.setenv("SURVEY_JOINS_PER_HOUR", "100")
    assert parse()["join_key"] == KEY and parse()["joins_per_hour"] == 100
    for bad in (("--join-key", "short"), ("--joins-per-hour", "-1"), ("--min-rating-ms", "soon")):
        with pytest.raises(SystemExit) as exit_info:
            parse(*bad)
        assert exit_info.value.code == 2


# ---------------------------------------------------------------- limits per client and per rating


@pytest.mark.e2e  # a server
def test_the_join_limit_refuses_the_next_new_rater_from_a_client_and_creates_none(prepared, tmp_path):
    with serve(prepared, tmp_path, joins_per_hour=3, min_rating_ms=0) as (client, db_path, _):
        codes = [client.predict("", True, api_name="/study_join")["code"] for _ in range(3)]
        assert all(codes) and count(db_path, "raters") == 3
        fourth = client.predict("", True, api_name="/study_join")
        assert refused(fourth, "Too many new raters", "try again later") and fourth["code"] is None
        assert count(db_path, "raters") == 3 and count(db_path, "rating_sessions") == 3
        # Raters who have a code carry on.
        assert client.predict(codes[0], False, api_name="/study_join")["status"] == "resumed"
        # A refusal for another reason uses none of the allowance.
        with serve(prepared, tmp_path / "second", joins_per_hour=1, min_rating_ms=0) as (other, other_db, _):
            assert refused(other.predict("", False, api_name="/study_join"), "consent")
            assert other.predict("", True, api_name="/study_join")["ok"]
            assert count(other_db, "raters") == 1


@pytest.mark.e2e  # a server
def test_a_rating_faster_than_a_person_can_look_is_refused_and_not_stored(prepared, tmp_path):
    # A floor of a minute: any scripted rating is too fast, however loaded the machine.
    with serve(prepared, tmp_path, joins_per_hour=0, min_rating_ms=60_000) as (client, db_path, _):
        state = client.predict("", True, api_name="/study_join")
        pid = state["presentation_id"]
        answer = client.predict(state["code"], pid, 4, api_name="/study_rate")
        assert refused(answer, "Not saved", "look at the image")
        assert count(db_path, "ratings") == 0
        # Once the image has been on screen long enough, the same rating is taken.
        with sqlite3.connect(db_path) as connection:
            shown = db.utc_now() - timedelta(minutes=2)
            connection.execute("UPDATE presentations SET shown_at = ? WHERE id = ?",
                               (shown.isoformat(sep=" "), pid))
        saved = client.predict(state["code"], pid, 4, api_name="/study_rate")
        assert saved["status"] == "saved" and count(db_path, "ratings") == 1
        with sqlite3.connect(db_path) as connection:
            assert connection.execute("SELECT response_ms FROM ratings").fetchone()[0] >= 60_000


def test_the_store_keeps_the_rating_floor_in_the_rating_transaction(tmp_path):
    """The floor is compared with the shown time the rating itself stores, in one transaction:
    nothing stored and the image not marked shown again when too fast (before, the tab read the
    shown time apart, so a page reload in between could store a rating faster than the floor)."""
    url = f"sqlite:///{tmp_path / 'floor.sqlite'}"
    engine = db.get_engine(url)
    try:
        store.ensure_study(engine, "floor", repeats=0, calibration_images=0)
        for image in ("a", "b"):
            store.register_stimulus(engine, "floor", image=image, method="hr", file_name=f"{image}.png", width=8,
                                    height=8)
        code = store.new_rater(engine, consent=True)
        item = store.join_study(engine, code, "floor")
        shown = shown_at(engine, item.presentation_id)

        result = store.submit_rating(engine, code, "floor", item.presentation_id, 4, min_response_ms=60_000)
        assert result.status == store.TOO_FAST and result.item is None
        assert store.session_ratings(engine, code, "floor") == []
        assert shown_at(engine, item.presentation_id) == shown  # the clock was not restarted

        with engine.begin() as connection:
            connection.execute(update(db.Presentation).where(db.Presentation.id == item.presentation_id)
                               .values(shown_at=shown - timedelta(minutes=2)))
        result = store.submit_rating(engine, code, "floor", item.presentation_id, 4, min_response_ms=60_000)
        assert result.status == "saved" and result.item.presentation_id != item.presentation_id
        with engine.connect() as connection:
            assert connection.scalar(select(db.Rating.response_ms)) >= 60_000
        # Without a floor (the default) a rating is taken at once.
        assert store.submit_rating(engine, code, "floor", result.item.presentation_id, 2).status == "saved"
    finally:
        db.dispose_engine(url)


def shown_at(engine, presentation_id: int):
    with engine.connect() as connection:
        return connection.scalar(select(db.Presentation.shown_at).where(db.Presentation.id == presentation_id))


@pytest.mark.e2e  # a server
def test_the_tab_reads_the_abandon_limit_once_when_built(prepared, tmp_path, monkeypatch, caplog):
    """SURVEY_ABANDON_MINUTES is read when the tab is built: a bad value warns once (before, at
    every join), and changing it later changes nothing until a restart."""
    monkeypatch.setenv("SURVEY_ABANDON_MINUTES", "soon")  # not minutes: the default 30, with a warning
    with caplog.at_level(logging.WARNING, logger="survey.study.store"), \
            serve(prepared, tmp_path, joins_per_hour=0, min_rating_ms=0) as (client, db_path, _):
        engine = db.get_engine(f"sqlite:///{db_path}")
        store.set_study_options(engine, STUDY, per_rater=3, repeats=0, calibration_images=0)  # 3 of 9 each
        monkeypatch.setenv("SURVEY_ABANDON_MINUTES", "0")  # would hand every session on at once
        first = client.predict("", True, api_name="/study_join")["code"]
        second = client.predict("", True, api_name="/study_join")["code"]  # the first idle for seconds only
        with sqlite3.connect(db_path) as connection:  # the first idle for an hour: past the 30 minutes
            hour_ago = (db.utc_now() - timedelta(hours=1)).isoformat(sep=" ")
            session = "(SELECT s.id FROM rating_sessions s JOIN raters r ON r.id = s.rater_id WHERE r.code = ?)"
            connection.execute(f"UPDATE rating_sessions SET created_at = ? WHERE id = {session}", (hour_ago, first))
            connection.execute(f"UPDATE presentations SET shown_at = ? WHERE shown_at IS NOT NULL AND session_id = "
                               f"{session}", (hour_ago, first))
        third = client.predict("", True, api_name="/study_join")["code"]
        with sqlite3.connect(db_path) as connection:
            slots = dict(connection.execute(
                "SELECT r.code, s.slot FROM rating_sessions s JOIN raters r ON r.id = s.rater_id").fetchall())
    assert slots == {first: None, second: 1, third: 0}
    warnings = [r for r in caplog.records if "SURVEY_ABANDON_MINUTES" in r.getMessage()]
    assert len(warnings) == 1


def test_join_limiter_window_release_and_bounded_memory():
    now = [0.0]
    limiter = study_tab.JoinLimiter(2, window_s=3600, max_clients=3, clock=lambda: now[0])
    assert limiter.acquire("a") is not None and limiter.acquire("a") is not None
    assert limiter.acquire("a") is None  # third in the hour
    now[0] = 3601.0
    stamp = limiter.acquire("a")
    assert stamp is not None  # the first two have left the window
    limiter.release("a", stamp)  # that join made no rater: it does not count
    assert limiter.acquire("a") is not None and limiter.acquire("a") is not None
    assert limiter.acquire("a") is None
    for client in ("b", "c", "d", "e"):
        limiter.acquire(client)
    assert len(limiter) == 3  # "a", the least recent, was forgotten
    assert study_tab.JoinLimiter(None).acquire("a") is not None
    assert all(study_tab.JoinLimiter(0).acquire("a") is not None for _ in range(100))


def test_the_join_limit_counts_ipv6_clients_by_their_64_network():
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:ffff::9") == (
        "2001:db8:1:2::/64")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key(None) == client_key("") == "unknown"
    assert client_key("testclient") == "testclient"


# ---------------------------------------------------------------- typed inputs (defect 9)


@pytest.mark.e2e  # a server
def test_inputs_of_the_wrong_type_get_a_clear_message_and_store_nothing(prepared, tmp_path):
    with serve(prepared, tmp_path, joins_per_hour=0, min_rating_ms=0) as (client, db_path, _):
        state = client.predict("", True, api_name="/study_join")
        code, pid = state["code"], state["presentation_id"]
        raters = count(db_path, "raters")
        cases = [
            (("/study_join", True), ("rater code is text",)),
            (("/study_join", True, True), ("rater code is text",)),
            (("/study_join", 12345), ("rater code is text",)),
            (("/study_join", ["x"], True), ("rater code is text",)),
            (("/study_join", "", "yes"), ("consent",)),
            (("/study_join", "", 1), ("consent",)),
            (("/study_join", "", None), ("consent box",)),  # no consent given
            (("/study_next", True), ("rater code is text",)),
            (("/study_next", {"code": code}), ("rater code is text",)),
            (("/study_continue", False, pid), ("rater code is text",)),
            (("/study_continue", code, [pid]), ("reload",)),
            (("/study_rate", True, pid, 3), ("rater code is text",)),
            (("/study_rate", code, pid, "five"), ("score",)),
            (("/study_rate", code, pid, True), ("score",)),
            (("/study_rate", code, pid, [3]), ("score",)),
            (("/study_rate", code, {"id": pid}, 3), ("reload",)),
            (("/study_rate", code, pid, None), ("score",)),
        ]
        for (api_name, *args), words in cases:
            answer = client.predict(*args, api_name=api_name)
            assert refused(answer, *words), (api_name, args, answer)
        assert count(db_path, "ratings") == 0 and count(db_path, "raters") == raters
        assert client.predict(code, pid, 3, api_name="/study_rate")["status"] == "saved"


@pytest.mark.e2e  # a server
def test_the_join_key_of_the_wrong_type_is_refused_clearly(prepared, tmp_path):
    with serve(prepared, tmp_path, join_key=KEY, joins_per_hour=0, min_rating_ms=0) as (client, db_path, _):
        for key in (12345678, True, [KEY]):
            assert refused(client.predict("", True, key, api_name="/study_join"), "invitation"), key
        assert count(db_path, "raters") == 0


@pytest.mark.e2e
def test_the_invitation_link_lets_a_rater_in_and_is_dropped_from_their_personal_link(prepared, tmp_path,
                                                                                      chromium_path):
    from playwright.sync_api import expect, sync_playwright

    with serve(prepared, tmp_path, join_key=KEY, joins_per_hour=0) as (_, db_path, url):
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(url)  # no key: told to use the invitation
                page.locator("#study-consent input").check()
                page.locator("#study-start").click()
                expect(page.locator("#study-message")).to_contain_text("invitation link", timeout=20_000)
                assert count(db_path, "raters") == 0
                page.goto(f"{url}?study&key={KEY}")
                page.locator("#study-consent input").check()
                page.locator("#study-start").click()
                expect(page).to_have_url(re.compile(r"[?&]rater=[A-Za-z0-9_-]{22,}"), timeout=20_000)
                assert "key=" not in page.url and count(db_path, "raters") == 1
                page.goto(page.url)  # the personal link resumes without the key
                expect(page.locator("#study-message")).to_contain_text("Welcome back", timeout=20_000)
            finally:
                browser.close()


# ---------------------------------------------------------------- screening notices the scripts


FIXED = {"nearest": 1, "bicubic": 5, "srresnet": 3, "srgan": 4, "hr": 5}  # passes the gold items


def with_bots(honest: pd.DataFrame, n_bots: int = 10, *, response_ms=lambda rng, n: rng.integers(300, 600, n),
              scores=None) -> pd.DataFrame:
    """Honest ratings plus bots that rate what r000 rated, each method at its fixed score."""
    template = honest[honest["rater"] == honest["rater"].iloc[0]]
    bots = []
    for b in range(n_bots):
        rng = np.random.default_rng(b)
        bot = template.assign(rater=f"bot{b}", session=f"s-bot{b}")
        bot["score"] = bot["method"].map(FIXED) if scores is None else scores(rng, bot)
        bot["response_ms"] = response_ms(rng, len(bot))
        bots.append(bot)
    return contract.validate(pd.concat([honest, *bots], ignore_index=True))


def honest_study(seed: int = 3) -> pd.DataFrame:
    return simulate_study(n_raters=26, n_images=20, seed=seed, retest_share=0.05)


def test_ten_bots_are_flagged_and_bicubic_returns_to_its_honest_mos():
    honest = honest_study()
    ratings = with_bots(honest)
    table = screening.screen_raters(ratings)
    bots = table.index.str.startswith("bot")
    assert table.loc[bots, "rejected"].all() and not table.loc[~bots, "rejected"].any()
    assert (table.loc[bots, "gold_failures"] == 0).all()  # the gold items do not catch them
    assert (table.loc[bots, "mos_correlation"] > screening.MIN_CORRELATION).all()  # nor the correlation
    for reason in ("median response time", "one score per method", "the same scores as bot"):
        assert table.loc[bots, "reasons"].str.contains(reason).all(), reason

    def bicubic(frame, screening_on=True) -> float:
        mos = report.analyse(frame, screening_on=screening_on, resamples=100).mos.set_index("method")["mos"]
        return float(mos["bicubic"])

    honest_mos = bicubic(contract.validate(honest))
    assert bicubic(ratings, screening_on=False) > honest_mos + 0.5  # what the bots did
    assert bicubic(ratings) == pytest.approx(honest_mos, abs=0.02)


def test_each_sign_of_a_script_is_enough_on_its_own():
    honest = honest_study(seed=4)

    def human_times(rng, n):
        return np.round(rng.lognormal(np.log(3500), 0.5, n)).astype(int)

    def human_like_scores(rng, bot):  # varied, so only the timing can give them away
        return np.clip(bot["method"].map(FIXED) + rng.integers(-1, 2, len(bot)), 1, 5)

    fast = screening.screen_raters(with_bots(honest, 2, scores=human_like_scores))
    assert fast.filter(like="bot", axis=0)["reasons"].str.fullmatch(r"median response time \d+ ms < 800 ms").all()
    regular = screening.screen_raters(with_bots(
        honest, 2, scores=human_like_scores, response_ms=lambda rng, n: 2000 + rng.integers(0, 50, n)))
    assert regular.filter(like="bot", axis=0)["reasons"].str.fullmatch(
        r"response times implausibly regular \(CV 0\.0\d < 0\.1\)").all()
    pattern = screening.screen_raters(with_bots(honest, 1, response_ms=human_times))
    assert pattern.loc["bot0", "reasons"] == ("one score per method on 100% of their ratings "
                                              "(scores follow the method, not the image)")
    for frame in (fast, regular, pattern):
        assert not frame.loc[~frame.index.str.startswith("bot"), "rejected"].any()


def test_copied_scores_are_flagged_for_both_raters():
    honest = contract.validate(honest_study(seed=5))
    copy = honest[honest["rater"] == "r007"].assign(rater="copycat", session="s-copycat")
    table = screening.screen_raters(contract.validate(pd.concat([honest, copy], ignore_index=True)))
    assert table.loc["copycat", "closest_rater"] == "r007" and table.loc["copycat", "closest_agreement"] == 1
    assert table.loc["copycat", "reasons"] == "the same scores as r007 on 100% of 100 shared stimuli"
    assert table.loc["r007", "rejected"] and table["rejected"].sum() == 2


def test_honest_raters_are_not_flagged_by_the_new_criteria():
    flagged = raters = 0
    for seed in range(20):
        for images in (8, 20):
            table = screening.screen_raters(contract.validate(
                simulate_study(n_raters=26, n_images=images, seed=900 + seed, retest_share=0.05)))
            flagged += sum(bool(screening.stuffing_reasons(row)) for _, row in table.iterrows())
            raters += len(table)
    assert flagged == 0, f"{flagged} of {raters} honest raters flagged"


def test_without_response_times_the_timing_criteria_are_skipped():
    ratings = with_bots(honest_study()).drop(columns="response_ms")
    table = screening.screen_raters(ratings)
    assert table["timed_ratings"].eq(0).all() and table["median_response_ms"].isna().all()
    assert not table["reasons"].str.contains("response time").any()
    assert table.loc[table.index.str.startswith("bot"), "rejected"].all()  # the patterns still show
    csv_like = with_bots(honest_study()).astype({"response_ms": str})  # as read_csv leaves it
    assert screening.screen_raters(contract.validate(csv_like))["median_response_ms"].notna().all()


def test_the_report_lists_flagged_bots_with_their_reasons(tmp_path):
    a = report.analyse(with_bots(honest_study()), study="s", resamples=100)
    text = report.report_markdown(a, command="test", figures=[])
    assert "10 of 36 raters rejected" in text
    assert "bot3 (median response time" in text
    assert "(e) a median response time below 800 ms" in text and "(h) the same scores" in text
    assert "| median response ms (CV) | one score per method |" in text
