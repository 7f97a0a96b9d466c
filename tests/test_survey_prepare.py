"""Study preparation: from HR photos, from pre-made outputs, idempotent, safe file names."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from survey.study import db, prepare, store


@pytest.fixture
def app_dir(tmp_path):
    return tmp_path / "var"


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    yield url
    db.dispose_engine(url)


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(folder))
    return folder


def photo(seed: int, size=(50, 42)) -> Image.Image:
    """A small smooth colour picture (sizes not multiples of 4, to exercise the crop)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    channels = [np.sin(x / rng.uniform(3, 9) + c) * np.cos(y / rng.uniform(3, 9)) for c in range(3)]
    return Image.fromarray((127.5 + 127 * np.stack(channels, -1)).astype(np.uint8))


def hr_folder(tmp_path, n=2):
    folder = tmp_path / "hr"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        photo(i).save(folder / f"pic{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def files_of(app_dir, study="s"):
    return {p.name: p.read_bytes() for p in prepare.study_dir(app_dir, study).iterdir()}


def test_prepare_from_hr_is_idempotent_and_skips_methods_without_weights(tmp_path, app_dir, db_url, no_weights, capsys):
    folder = hr_folder(tmp_path)
    args = ["--name", "s", "--hr-dir", str(folder), "--db", db_url, "--app-dir", str(app_dir)]
    assert prepare.main(args) == 0
    printed = capsys.readouterr().out
    assert "Skipped method 'srresnet'" in printed and "Skipped method 'srgan'" in printed
    summary = store.study_summary(db.get_engine(db_url), "s")
    assert summary["methods"] == ["bicubic", "hr", "nearest"] and summary["stimuli"] == 6
    first = files_of(app_dir)
    assert len(first) == 6 + 4  # and two calibration images, each as nearest and original
    for name in first:  # names reveal nothing about the method
        assert len(name) == 36 and name.endswith(".png")
        assert not any(m in name for m in ("nearest", "bicubic", "hr", "pic", "calibration"))
    # Sizes: HR cropped to 48x40, every method 4x the 12x10 LR; calibration photos 256x256.
    sizes = {Image.open(prepare.study_dir(app_dir, "s") / n).size for n in first}
    assert sizes == {(48, 40), (256, 256)}

    assert prepare.main(args) == 0  # again: nothing changes
    assert "0 stimuli added, 6 already there" in capsys.readouterr().out
    assert files_of(app_dir) == first

    photo(7).save(folder / "pic9.png")  # a new image adds only its stimuli
    engine = db.get_engine(db_url)
    for image, method in (("pic0", "bicubic"), ("calibration-cameraman", "nearest")):  # lost files are remade
        (prepare.study_dir(app_dir, "s") / store.stimulus_file_name(engine, "s", image, method)).unlink()
    assert prepare.main(args) == 0
    assert "4 stimuli added, 5 already there" in capsys.readouterr().out
    assert store.study_summary(db.get_engine(db_url), "s")["stimuli"] == 9


def test_methods_with_weights_are_included(tmp_path, app_dir, db_url, monkeypatch):
    from srgan.models import SRResNet
    from srgan.weights import save_weights, weights_path

    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "weights"))
    save_weights(SRResNet(num_blocks=1, channels=8), weights_path("srresnet_x4"), {"note": "random, for tests"})
    report = prepare.prepare_from_hr(db_url=db_url, app_dir=app_dir, study="s",
                                     hr_images={"one": photo(1)}, methods=["srresnet", "srgan", "hr"])
    assert report.added == 2 and any("srgan" in note for note in report.notes)
    assert store.study_summary(db.get_engine(db_url), "s")["methods"] == ["hr", "srresnet"]


def test_prepare_says_which_precision_made_the_stimuli(tmp_path, app_dir, db_url, monkeypatch, capsys):
    from srgan.models import SRResNet
    from srgan.weights import save_weights, weights_path

    monkeypatch.setenv("SRGAN_WEIGHTS_DIR", str(tmp_path / "weights"))
    save_weights(SRResNet(num_blocks=1, channels=8), weights_path("srresnet_x4"), {"note": "random, for tests"})
    base = ["--name", "s", "--hr-dir", str(hr_folder(tmp_path)), "--db", db_url, "--app-dir", str(app_dir),
            "--methods", "srresnet,hr"]
    assert prepare.main([*base, "--precision", "fp32"]) == 0
    assert "(networks in fp32)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # fp16 is for CUDA; the study is made on the CPU
        prepare.main([*base, "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_prepare_from_outputs(tmp_path, app_dir, db_url, capsys):
    outputs = tmp_path / "outputs"
    for method in ("baseline", "hr"):
        (outputs / method).mkdir(parents=True)
        for i in range(3):
            photo(i, size=(32, 24)).save(outputs / method / f"{i:03d}.png")
    (outputs / "baseline" / "broken.png").write_bytes(b"not a png")
    args = ["--name", "pub", "--from-outputs", str(outputs), "--db", db_url, "--app-dir", str(app_dir)]
    assert prepare.main(args) == 0
    out = capsys.readouterr().out
    assert "broken.png" in out and "6 stimuli added" in out
    summary = store.study_summary(db.get_engine(db_url), "pub")
    assert summary["methods"] == ["baseline", "hr"] and summary["images"] == 3
    # No nearest among the outputs: the calibration images still show both anchors.
    assert summary["calibration_note"] is None and summary["calibration_images_ready"] == 2
    assert prepare.main(args) == 0
    assert "0 stimuli added, 6 already there" in capsys.readouterr().out


def test_bad_arguments_give_clear_errors(tmp_path, app_dir, db_url, capsys):
    base = ["--db", db_url, "--app-dir", str(app_dir)]
    assert prepare.main(["--name", "s", "--hr-dir", str(tmp_path / "missing"), *base]) == 2
    assert "HR folder not found" in capsys.readouterr().err
    assert prepare.main(["--name", "../evil", "--hr-dir", str(hr_folder(tmp_path)), *base]) == 2
    assert "Invalid study name" in capsys.readouterr().err
    assert prepare.main(["--name", "s", "--hr-dir", str(hr_folder(tmp_path)), "--methods", "nearest,magic", *base]) == 2
    assert "Unknown method" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../study.sqlite", "..", "/etc/passwd", "a/b.png", "x.png/..", "", "abc.txt"])
def test_stimulus_paths_cannot_leave_the_study_folder(app_dir, name):
    with pytest.raises(store.StudyError):
        prepare.stimulus_path(app_dir, "s", name)
    with pytest.raises(store.StudyError):
        prepare.study_dir(app_dir, "../s")


def test_default_study_is_quick_and_made_once(app_dir, db_url, no_weights):
    start = time.perf_counter()
    assert prepare.ensure_default_study(db_url=db_url, app_dir=app_dir) == "examples"
    first = time.perf_counter() - start
    summary = store.study_summary(db.get_engine(db_url), "examples")
    assert summary["images"] == 4 and summary["methods"] == ["bicubic", "hr", "nearest"]
    assert {Image.open(p).size for p in prepare.study_dir(app_dir, "examples").iterdir()} == {(256, 256)}
    before = files_of(app_dir, "examples")
    start = time.perf_counter()
    prepare.ensure_default_study(db_url=db_url, app_dir=app_dir)
    again = time.perf_counter() - start
    assert files_of(app_dir, "examples") == before
    assert first < 30 and again < 2, (first, again)


def test_calibration_images_are_other_photographs_and_never_rated(tmp_path, app_dir, db_url, no_weights, capsys):
    folder = hr_folder(tmp_path, n=3)
    base = ["--name", "s", "--hr-dir", str(folder), "--db", db_url, "--app-dir", str(app_dir)]
    # The study's own photos cannot calibrate it: refused with a reason, nothing half-made.
    assert prepare.main([*base, "--calibration-dir", str(folder)]) == 2
    assert "images the study rates" in capsys.readouterr().err
    assert store.list_studies(db.get_engine(db_url)) == []
    own = tmp_path / "calibration"
    own.mkdir()
    for i in (20, 21, 22):
        photo(i, size=(64, 48)).save(own / f"train{i}.png")
    assert prepare.main([*base, "--calibration-dir", str(own), "--calibration-images", "3"]) == 0
    assert "calibration: 3 images" in capsys.readouterr().out
    engine = db.get_engine(db_url)
    assert store.image_names(engine, "s", calibration=True) == [f"calibration-train{i}" for i in (20, 21, 22)]
    summary = store.study_summary(engine, "s")
    assert summary["images"] == 3 and summary["stimuli"] == 9 and summary["calibration_note"] is None

    # Every rater: the calibration examples first, a 1 then a 5 of each calibration image, and
    # not one of those images among the rated ones.
    for _ in range(5):
        code = store.new_rater(engine, consent=True)
        store.join_study(engine, code, "s")
        plan = store.session_plan(engine, code, "s")
        shown = [p for p in plan if p["is_calibration"]]
        assert [(p["method"], p["calibration_score"]) for p in shown] == [("nearest", 1), ("hr", 5)] * 3
        assert plan[: len(shown)] == shown
        assert not {p["image_id"] for p in shown} & {p["image_id"] for p in plan if not p["is_calibration"]}
    # An image cannot change sides later.
    with pytest.raises(store.StudyError, match="calibration image"):
        store.register_stimulus(engine, "s", image="calibration-train20", method="bicubic", file_name="x.png",
                                width=1, height=1)


def test_built_in_calibration_photos_skip_what_a_study_rates(app_dir, db_url, no_weights):
    prepare.ensure_default_study(db_url=db_url, app_dir=app_dir)
    engine = db.get_engine(db_url)
    assert store.image_names(engine, "examples", calibration=True) == ["calibration-cameraman", "calibration-motorcycle"]
    # A study rating those two too gets the next free photographs (the examples' own, here).
    report = prepare.prepare_from_hr(db_url=db_url, app_dir=app_dir, study="other", methods=["bicubic", "hr"],
                                     hr_images={"motorcycle": photo(1), "cameraman": photo(2)}, calibration_images=3)
    assert store.image_names(engine, "other", calibration=True) == [
        "calibration-astronaut", "calibration-chelsea", "calibration-coffee"
    ]
    assert report.calibration_added == 6 and report.notes == []
    assert prepare.prepare_from_hr(db_url=db_url, app_dir=app_dir, study="few", methods=["hr"], calibration_images=9,
                                   hr_images={"one": photo(3)}).notes[-1].startswith("Only 6 of 9 calibration images")
