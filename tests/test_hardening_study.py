"""Issue #19, the study's assignment and stimuli: abandoned joins hand their slot on, and no
stimulus file tells its method (size, encoding, colour profile).

On real SQLite files and real PNG files; Chromium decodes the stimuli in the e2e test.
"""

from __future__ import annotations

import base64
import io
import struct
import threading
import zlib
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image, ImageCms
from sqlalchemy import event, func, insert, select, update

from conftest import CHROMIUM_ARGS
from srgan.images import PNG_SIGNATURE
from survey.study import db, prepare, protocol, store
from survey.study.db import Presentation, Rating, RatingSession, Stimulus
from test_postgres import postgres_database

NOW = timedelta(0)  # a session idle for no time at all counts as abandoned: the next join takes it


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    yield url
    db.dispose_engine(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    """A fresh SQLite file, and a fresh database on the PostgreSQL server named by
    SURVEY_TEST_PG_URL (skipped without one)."""
    if request.param == "postgres":
        with postgres_database() as url:
            yield db.get_engine(url)
        return
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    yield db.get_engine(url)
    db.dispose_engine(url)


@pytest.fixture
def app_dir(tmp_path):
    return tmp_path / "var"


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(folder))


# ---------------------------------------------------------------- abandoned joins


def make_study(engine, name="s", *, n_images, methods=("nearest", "bicubic", "srgan", "hr"), **options) -> str:
    """Rated images under each method, and one calibration-only image (as survey.prepare makes them)."""
    store.ensure_study(engine, name, calibration_images=1, **options)
    for i in range(n_images):
        for method in methods:
            store.register_stimulus(engine, name, image=f"img{i}", method=method, file_name=f"{i:02d}{method}.png",
                                    width=8, height=8)
    for method in ("nearest", "hr"):
        store.register_stimulus(engine, name, image="cal0", method=method, file_name=f"cal{method}.png", width=8,
                                height=8, calibration=True)
    return name


def rate(engine, code, study, *, count=None, idle=NOW) -> store.Item:
    """Join (or resume) and rate ``count`` items (all when None), passing the examples."""
    item = store.join_study(engine, code, study, idle=idle)
    rated = 0
    while not item.done and (count is None or rated < count):
        if item.is_calibration:
            item = store.acknowledge_calibration(engine, code, study, item.presentation_id)
        else:
            item = store.submit_rating(engine, code, study, item.presentation_id, 1 + rated % 5).item
            rated += 1
    return item


def ratings_per_stimulus(engine) -> Counter:
    """Ratings of each rated stimulus, hidden duplicates aside (a stimulus never rated: 0)."""
    with engine.connect() as connection:
        counts = Counter(dict(connection.execute(
            select(Presentation.stimulus_id, func.count(Rating.id))
            .join(Rating, Rating.presentation_id == Presentation.id)
            .where(Presentation.is_repeat.is_(False), Presentation.is_calibration.is_(False))
            .group_by(Presentation.stimulus_id)
        ).all()))
        rated = connection.scalars(
            select(Stimulus.id).join(db.Image, Stimulus.image_id == db.Image.id).where(db.Image.calibration.is_(False))
        ).all()
    return Counter({stimulus_id: counts.get(stimulus_id, 0) for stimulus_id in rated})


def count_ratings(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count(Rating.id)))


@pytest.mark.parametrize("abandoned_per_finisher", [1, 5])
def test_abandoned_joins_hand_their_slot_on_so_every_stimulus_reaches_its_target(engine, abandoned_per_finisher):
    """12 images x 4 methods, 20 per rater, target 10: 24 finishing raters, each followed by joins
    that never rate. Before, each join took a slot for good: 8-12 ratings per stimulus with one
    abandoned join per finisher, 0-12 with five."""
    study = make_study(engine, n_images=12, per_rater=20, repeats=1)
    finishers = protocol.raters_needed(n_stimuli=48, per_rater=20, target_ratings=10)
    assert finishers == 24
    for _ in range(finishers):
        assert rate(engine, store.new_rater(engine, consent=True), study).done
        for _ in range(abandoned_per_finisher):
            store.join_study(engine, store.new_rater(engine, consent=True), study, idle=NOW)
    counts = ratings_per_stimulus(engine)
    assert len(counts) == 48 and set(counts.values()) == {10}
    # Every abandoned join but the last handed its slot on, and none of them lost a rating.
    summary = store.study_summary(engine, study)
    assert summary["sessions_handed_on"] == finishers * abandoned_per_finisher - 1
    assert summary["ratings"] == finishers * (20 + 1)


def test_a_rater_who_stops_early_leaves_the_rest_to_the_next_and_finds_the_session_finished(engine):
    study = make_study(engine, n_images=6, per_rater=12, repeats=0)
    early = store.new_rater(engine, consent=True)
    on_screen = rate(engine, early, study, count=5)
    window = {p["stimulus_id"] for p in store.session_plan(engine, early, study) if not p["is_calibration"]}
    rated_early = {p["stimulus_id"] for p in store.session_plan(engine, early, study)
                   if p["presentation_id"] in {pid for _, pid, _ in store.session_ratings(engine, early, study)}}
    assert len(rated_early) == 5

    # Within the idle limit nobody takes the session over: the next rater gets the next slot.
    patient = store.new_rater(engine, consent=True)
    store.join_study(engine, patient, study, idle=timedelta(minutes=30))
    assert store.session_plan(engine, patient, study)[0]["slot"] == 1

    # Once idle past it, the next rater rates exactly the remainder of the early rater's slot.
    late = store.new_rater(engine, consent=True)
    store.join_study(engine, late, study, idle=NOW)
    plan = store.session_plan(engine, late, study)
    assert {p["slot"] for p in plan} == {0}
    assert {p["stimulus_id"] for p in plan if not p["is_calibration"]} == window - rated_early
    assert sum(p["is_calibration"] for p in plan) == 2  # the new rater still sees the examples

    # The early rater comes back: their 5 ratings stand, the page on screen is refused clearly,
    # and their session is finished.
    with pytest.raises(store.StudyError, match="went to another rater.*saved"):
        store.submit_rating(engine, early, study, on_screen.presentation_id, 3)
    back = store.join_study(engine, early, study, idle=NOW)
    assert back.done and back.rated == back.total == 5
    assert len(store.session_ratings(engine, early, study)) == 5
    assert count_ratings(engine) == 5

    assert rate(engine, late, study).done
    counts = ratings_per_stimulus(engine)
    assert all(counts[s] == 1 for s in window) and sum(counts.values()) == 12
    assert store.study_summary(engine, study)["sessions_handed_on"] == 1


def test_raters_who_stop_early_still_leave_every_stimulus_at_its_target(engine):
    """Each finisher followed by a rater who rates 3 and leaves: the remainders are re-handed."""
    study = make_study(engine, n_images=12, per_rater=20, repeats=1)
    while count_ratings_rated(engine) < 10 * 48:
        assert rate(engine, store.new_rater(engine, consent=True), study).done
        if count_ratings_rated(engine) < 10 * 48:
            rate(engine, store.new_rater(engine, consent=True), study, count=3)
    counts = ratings_per_stimulus(engine)
    assert set(counts.values()) == {10}


def count_ratings_rated(engine) -> int:
    return sum(ratings_per_stimulus(engine).values())


def test_every_rater_rates_everything_so_nothing_is_handed_on(engine):
    study = make_study(engine, n_images=3, repeats=0)  # per_rater None
    first = store.new_rater(engine, consent=True)
    store.join_study(engine, first, study, idle=NOW)
    second = store.new_rater(engine, consent=True)
    store.join_study(engine, second, study, idle=NOW)
    assert [store.session_plan(engine, code, study)[0]["slot"] for code in (first, second)] == [0, 1]
    assert store.study_summary(engine, study)["sessions_handed_on"] == 0


def test_concurrent_joins_take_each_abandoned_slot_once(engine):
    study = make_study(engine, n_images=12, per_rater=20, repeats=0)
    abandoned = [store.new_rater(engine, consent=True) for _ in range(6)]
    for code in abandoned:
        store.join_study(engine, code, study)
    with engine.begin() as connection:  # an hour ago: idle well past the 10 minutes below
        hour_ago = db.utc_now() - timedelta(hours=1)
        connection.execute(update(RatingSession).values(created_at=hour_ago))
        connection.execute(update(Presentation).where(Presentation.shown_at.is_not(None)).values(shown_at=hour_ago))
    joiners = [store.new_rater(engine, consent=True) for _ in range(8)]
    errors = []

    def join(code):
        try:
            store.join_study(engine, code, study, idle=timedelta(minutes=10))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=join, args=(code,)) for code in joiners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    slots = [store.session_plan(engine, code, study)[0]["slot"] for code in joiners]
    assert sorted(slots) == list(range(8))  # the six abandoned slots, then two new ones
    assert all(store.join_study(engine, code, study).done for code in abandoned)
    with engine.connect() as connection:
        stimuli = connection.execute(
            select(Stimulus.id, Stimulus.image_id, db.Method.name).join(db.Method, Stimulus.method_id == db.Method.id)
            .join(db.Image, Stimulus.image_id == db.Image.id).where(db.Image.calibration.is_(False))).all()
    for code, slot in zip(joiners, slots):  # each rates its slot's whole window
        rated = {p["stimulus_id"] for p in store.session_plan(engine, code, study) if not p["is_calibration"]}
        window = protocol.assign_stimuli([tuple(s) for s in stimuli], slot=slot, per_rater=20)
        assert rated == {key[0] for key in window}


def sessions_by_slot(engine, study) -> dict[int, list[dict]]:
    """Each slot-holding session's plan, by slot."""
    with engine.connect() as connection:
        codes = connection.execute(
            select(RatingSession.slot, db.Rater.code).join(db.Rater, RatingSession.rater_id == db.Rater.id)
            .where(RatingSession.slot.is_not(None))).all()
    return {slot: store.session_plan(engine, code, study) for slot, code in codes}


def finish_every_session(engine, *, ago: timedelta) -> None:
    """Every presentation rated (or acknowledged) and every session last active ``ago``, in SQL:
    the state of a study that has collected its ratings."""
    then = db.utc_now() - ago
    with engine.begin() as connection:
        connection.execute(update(RatingSession).values(created_at=then))
        connection.execute(update(Presentation).values(shown_at=then))
        connection.execute(update(Presentation).where(Presentation.is_calibration.is_(True)).values(acknowledged_at=then))
        connection.execute(insert(Rating).from_select(
            ["presentation_id", "score", "shown_at", "answered_at", "response_ms"],
            select(Presentation.id, 3, Presentation.shown_at, Presentation.shown_at, 1000)
            .where(Presentation.is_calibration.is_(False), Presentation.id.not_in(select(Rating.presentation_id)))))


def rows_a_join_reads(engine, study) -> int:
    """How many rows the database hands back to one new rater's join (its SELECTs run again)."""
    statements = []

    def record(_connection, _cursor, statement, parameters, _context, _executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        store.join_study(engine, store.new_rater(engine, consent=True), study, idle=timedelta(minutes=30))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as connection:
        return sum(len(connection.exec_driver_sql(statement, parameters).all()) for statement, parameters in statements)


def test_a_join_reads_no_row_of_the_finished_sessions(engine):
    """Finished sessions keep their slot for good; the search for an abandoned one runs in the
    database, so what a join reads does not grow with them. Before, it read back one row per
    session ever created (40 more sessions: 40 more rows)."""
    study = make_study(engine, n_images=6, per_rater=8, repeats=1)
    read = []
    for _ in range(2):
        for _ in range(40):
            store.join_study(engine, store.new_rater(engine, consent=True), study, idle=timedelta(days=1))
        finish_every_session(engine, ago=timedelta(days=2))  # long past the idle limit: only finished
        read.append(rows_a_join_reads(engine, study))
    assert read[0] == read[1]  # (37 each; before: 78, then 119)


def test_what_counts_as_abandoned_is_decided_in_the_database(engine):
    """Sessions a join must leave alone, more of them than it reads at once, ahead (by slot) of
    the one it must take: its unrated images' files gone, finished, only a hidden duplicate left,
    shown an image or past an example since the limit."""
    study = make_study(engine, n_images=12, per_rater=4, repeats=1)  # 48 stimuli: slots 0-11 disjoint
    codes = [store.new_rater(engine, consent=True) for _ in range(10)]
    for code in codes:
        store.join_study(engine, code, study, idle=timedelta(days=1))
    plans = sessions_by_slot(engine, study)
    assert sorted(plans) == list(range(10))
    hours_ago, now = db.utc_now() - timedelta(hours=2), db.utc_now()
    fileless = 1 + store.CLAIM_CANDIDATES
    with engine.begin() as connection:
        connection.execute(update(RatingSession).values(created_at=hours_ago))
        connection.execute(update(Presentation).where(Presentation.shown_at.is_not(None)).values(shown_at=hours_ago))
        gone = {p["stimulus_id"] for slot in range(fileless) for p in plans[slot] if not p["is_calibration"]}
        connection.execute(update(Stimulus).where(Stimulus.id.in_(gone)).values(file_name=None))

        def rate_all(slot, *, repeats):
            for p in plans[slot]:
                if not p["is_calibration"] and (repeats or not p["is_repeat"]):
                    connection.execute(insert(Rating).values(presentation_id=p["presentation_id"], score=3,
                                                             shown_at=hours_ago, answered_at=hours_ago, response_ms=900))

        finished, duplicate_left, shown_since, acknowledged_since, abandoned = range(fileless, fileless + 5)
        rate_all(finished, repeats=True)
        rate_all(duplicate_left, repeats=False)
        connection.execute(update(Presentation).where(Presentation.id == plans[shown_since][-1]["presentation_id"])
                           .values(shown_at=now))
        connection.execute(update(Presentation).where(Presentation.id == plans[acknowledged_since][0]["presentation_id"])
                           .values(acknowledged_at=now))
    assert plans[acknowledged_since][0]["is_calibration"] and any(p["is_repeat"] for p in plans[duplicate_left])

    joiner = store.new_rater(engine, consent=True)
    store.join_study(engine, joiner, study, idle=timedelta(minutes=10))
    plan = store.session_plan(engine, joiner, study)
    assert plan[0]["slot"] == abandoned
    assert ({p["stimulus_id"] for p in plan if not p["is_calibration"]}
            == {p["stimulus_id"] for p in plans[abandoned] if not p["is_calibration"]})
    assert store.join_study(engine, codes[abandoned], study).done  # its rater finds it finished
    # Nothing else may be taken: the next joiner gets a new slot.
    store.join_study(engine, store.new_rater(engine, consent=True), study, idle=timedelta(minutes=10))
    assert sorted(sessions_by_slot(engine, study)) == list(range(11))


def test_idle_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SURVEY_ABANDON_MINUTES", raising=False)
    assert store.idle_limit() == timedelta(minutes=30)
    monkeypatch.setenv("SURVEY_ABANDON_MINUTES", "2.5")
    assert store.idle_limit() == timedelta(minutes=2.5)
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("SURVEY_ABANDON_MINUTES", bad)
        assert store.idle_limit() == timedelta(minutes=30)


# ---------------------------------------------------------------- stimulus files


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of each chunk, checking the signature and every CRC."""
    assert data[:8] == PNG_SIGNATURE
    found, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body)
        found.append((kind, body))
        at += 12 + length
    return found


def chunk_kinds(data: bytes) -> list[bytes]:
    """The kinds of chunk, in order, each once (Pillow splits the pixels over several IDATs)."""
    return list(dict.fromkeys(kind for kind, _ in chunks(data)))


def adobe_like_icc() -> bytes:
    """An ICC v2 display profile with Adobe RGB (1998)'s primaries (D50-adapted) and gamma 2.2:
    a wide-gamut RGB profile, far from sRGB."""

    def s15(value):
        return struct.pack(">i", round(value * 65536))

    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", 11) + b"Adobe-like\0" + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    tags = [
        (b"desc", desc),
        (b"cprt", b"text\0\0\0\0none\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.60974, 0.31111, 0.01947)),
        (b"gXYZ", xyz(0.20528, 0.62567, 0.06087)),
        (b"bXYZ", xyz(0.14919, 0.06322, 0.74457)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24 + struct.pack(">I", 0)
        + s15(0.9642) + s15(1.0) + s15(0.8249) + b"lcms" + b"\0" * 44
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def photo(seed: int, size=(48, 40)) -> Image.Image:
    """A smooth, saturated colour picture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    channels = [np.sin(x / rng.uniform(3, 9) + c) * np.cos(y / rng.uniform(3, 9)) for c in range(3)]
    return Image.fromarray((127.5 + 127 * np.stack(channels, -1)).astype(np.uint8))


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (48, 40), (256, 256), (480, 320)])
def test_a_stimulus_file_length_depends_on_its_pixel_size_alone(size):
    rng = np.random.default_rng(0)
    width, height = size
    pictures = {
        "noise": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),  # incompressible
        "flat": np.full((height, width, 3), 128, np.uint8),  # as compressible as it gets
        "blocks": np.kron(rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8),
                          np.ones((4, 4, 1), np.uint8))[:height, :width],  # nearest-neighbour-like
    }
    files = {name: prepare.stimulus_png(Image.fromarray(pixels)) for name, pixels in pictures.items()}
    # Metadata a picture carries (an sRGB profile, a transparent colour) is not written.
    tagged = Image.fromarray(pictures["noise"])
    tagged.info.update(icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
                       transparency=(0, 0, 0), gamma=0.45)
    files["tagged"], pictures["tagged"] = prepare.stimulus_png(tagged), pictures["noise"]
    assert len(set(map(len, files.values()))) == 1
    for name, data in files.items():
        assert chunk_kinds(data) == [b"IHDR", b"IDAT", b"IEND"]
        assert chunks(data)[0][1] == struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        back = Image.open(io.BytesIO(data))
        assert back.mode == "RGB" and back.info == {}
        assert np.array_equal(np.asarray(back), pictures[name])  # lossless
    if size == (480, 320):
        assert len(files["noise"]) < 3 * width * height * 1.01  # the price: 461 KB for a BSD100 stimulus


def test_stimuli_of_one_image_are_identical_in_size_and_form_and_the_original_is_in_srgb(
    tmp_path, app_dir, db_url, no_weights
):
    """An HR photo with a wide-gamut colour profile: every stimulus is untagged sRGB, the same
    length, the same chunks; the original's pixels are its sRGB conversion, and the other
    methods are made from those."""
    from srgan.inference import Upscaler, downscale

    folder = tmp_path / "hr"
    folder.mkdir()
    icc = adobe_like_icc()
    picture = photo(3, size=(50, 42))
    picture.save(folder / "wide.png", icc_profile=icc)
    photo(4, size=(50, 42)).save(folder / "plain.png")
    report = prepare.prepare_from_hr(
        db_url=db_url, app_dir=app_dir, study="s", hr_images=prepare.hr_folder_images(folder),
        methods=["nearest", "bicubic", "hr"], calibration_images=1,
    )
    assert report.added == 6 and not [n for n in report.notes if "Skipped image" in n]
    engine = db.get_engine(db_url)
    folder_of_study = prepare.study_dir(app_dir, "s")
    files = {p.name: p.read_bytes() for p in folder_of_study.iterdir()}
    rated = {(image, method): files[store.stimulus_file_name(engine, "s", image, method)]
             for image in ("wide", "plain") for method in ("nearest", "bicubic", "hr")}
    assert len({len(data) for data in rated.values()}) == 1  # 48x40 each: one length
    for data in files.values():  # calibration images too: nothing but pixels
        assert chunk_kinds(data) == [b"IHDR", b"IDAT", b"IEND"]
        assert "icc_profile" not in Image.open(io.BytesIO(data)).info

    original = picture.crop((0, 0, 48, 40))
    converted = ImageCms.profileToProfile(
        original, ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    stored_hr = np.asarray(Image.open(io.BytesIO(rated["wide", "hr"])))
    assert np.array_equal(stored_hr, np.asarray(converted))
    assert np.abs(stored_hr.astype(int) - np.asarray(original)).max() > 20  # a real colour change
    bicubic = Upscaler().upscale(downscale(converted), "bicubic")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(rated["wide", "bicubic"]))), np.asarray(bicubic))
    plain_hr = np.asarray(Image.open(io.BytesIO(rated["plain", "hr"])))
    assert np.array_equal(plain_hr, np.asarray(photo(4, size=(50, 42)).crop((0, 0, 48, 40))))


def test_outputs_with_a_profile_are_converted_and_one_that_cannot_be_is_skipped_clearly(tmp_path, app_dir, db_url):
    outputs = tmp_path / "outputs"
    for method in ("mine", "theirs"):
        (outputs / method).mkdir(parents=True)
    icc = adobe_like_icc()
    photo(1).save(outputs / "mine" / "a.png", icc_profile=icc)
    photo(1).save(outputs / "theirs" / "a.png")
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    photo(2).save(outputs / "theirs" / "b.png", icc_profile=lab)
    report = prepare.prepare_from_outputs(db_url=db_url, app_dir=app_dir, study="o", outputs_dir=outputs,
                                          calibration_images=0)
    assert report.added == 2
    assert any("b.png" in note and "not RGB" in note and "sRGB" in note for note in report.notes)
    engine = db.get_engine(db_url)
    mine = Image.open(prepare.stimulus_path(app_dir, "o", store.stimulus_file_name(engine, "o", "a", "mine")))
    assert "icc_profile" not in mine.info
    assert not np.array_equal(np.asarray(mine), np.asarray(photo(1)))  # converted to sRGB


@pytest.mark.e2e
def test_chromium_shows_the_stimulus_pixels_exactly(chromium_path):
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(5)
    pixels = {
        "noise": rng.integers(0, 256, (40, 48, 3), dtype=np.uint8),
        "photo": np.asarray(photo(6, size=(300, 200))),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True,
                                    args=CHROMIUM_ARGS + ["--force-color-profile=srgb"])
        page = browser.new_page()
        for name, array in pixels.items():
            encoded = base64.b64encode(prepare.stimulus_png(Image.fromarray(array))).decode("ascii")
            shown = page.evaluate(
                """async (url) => {
                    const img = new Image(); img.src = url; await img.decode();
                    const canvas = document.createElement('canvas');
                    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                    const context = canvas.getContext('2d');
                    context.drawImage(img, 0, 0);
                    return [img.naturalWidth, img.naturalHeight,
                            Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];
                }""",
                f"data:image/png;base64,{encoded}",
            )
            width, height, rgba = shown
            assert (height, width) == array.shape[:2], name
            decoded = np.array(rgba, dtype=np.uint8).reshape(height, width, 4)
            assert np.array_equal(decoded[..., :3], array), name
        browser.close()
