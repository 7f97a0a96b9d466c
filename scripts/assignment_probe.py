"""Figures for issue #19's study defects 3, 4 and 8, for whichever ``survey`` package is on the path.

    PYTHONPATH=/work/main python scripts/assignment_probe.py            # this tree
    PYTHONPATH=/tmp/old-tree python scripts/assignment_probe.py         # HEAD before the fix

Balance: in-process raters on a real SQLite file (SURVEY_ABANDON_MINUTES=0: a session idle for
no time counts as abandoned at the next join). Stimuli: the PNG bytes prepare writes, per method.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ["SURVEY_ABANDON_MINUTES"] = "0"

from PIL import Image  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from survey.study import db, prepare, protocol, store  # noqa: E402


def study(engine, name, n_images, n_methods, per_rater):
    store.ensure_study(engine, name, per_rater=per_rater, repeats=2, calibration_images=1)
    for i in range(n_images):
        for m in range(n_methods):
            store.register_stimulus(engine, name, image=f"i{i}", method=f"m{m}", file_name=f"{i}x{m}.png", width=8, height=8)
    for method in ("nearest", "hr"):
        store.register_stimulus(engine, name, image="cal", method=method, file_name=f"c{method}.png", width=8, height=8,
                                calibration=True)


def rate(engine, name, count=None):
    code = store.new_rater(engine, consent=True)
    item = store.join_study(engine, code, name)
    rated = 0
    while not item.done and (count is None or rated < count):
        if item.is_calibration:
            item = store.acknowledge_calibration(engine, code, name, item.presentation_id)
        else:
            item = store.submit_rating(engine, code, name, item.presentation_id, 3).item
            rated += 1


def per_stimulus(engine, name):
    with engine.connect() as connection:
        rows = dict(connection.execute(
            select(db.Presentation.stimulus_id, func.count(db.Rating.id))
            .join(db.Rating, db.Rating.presentation_id == db.Presentation.id)
            .join(db.Stimulus, db.Presentation.stimulus_id == db.Stimulus.id)
            .join(db.Study, db.Stimulus.study_id == db.Study.id)
            .where(db.Study.name == name, db.Presentation.is_repeat.is_(False), db.Presentation.is_calibration.is_(False))
            .group_by(db.Presentation.stimulus_id)).all())
        ids = connection.scalars(
            select(db.Stimulus.id).join(db.Study, db.Stimulus.study_id == db.Study.id)
            .join(db.Image, db.Stimulus.image_id == db.Image.id)
            .where(db.Study.name == name, db.Image.calibration.is_(False))).all()
    return Counter({i: rows.get(i, 0) for i in ids})


def balance(engine, case, n_images, n_methods, per_rater, *, abandoned=0, stop_after=None, target=10):
    name = f"{case}-{n_images}x{n_methods}-{per_rater}".replace(" ", "_")
    study(engine, name, n_images, n_methods, per_rater)
    n = n_images * n_methods
    finishers = protocol.raters_needed(n_stimuli=n, per_rater=per_rater, target_ratings=target)
    start = time.perf_counter()
    joins = 0
    if stop_after is None:
        for _ in range(finishers):
            rate(engine, name)
            joins += 1
            for _ in range(abandoned):
                rate(engine, name, count=0)
                joins += 1
    else:  # finishers until the target total is reached, each followed by one who stops early
        while sum(per_stimulus(engine, name).values()) < target * n and joins < 4 * finishers:
            rate(engine, name)
            joins += 1
            if sum(per_stimulus(engine, name).values()) < target * n:
                rate(engine, name, count=stop_after)
                joins += 1
    counts = per_stimulus(engine, name).values()
    return (f"| {case} | {n_images}x{n_methods} = {n} | {per_rater} | {joins} | "
            f"{min(counts)}-{max(counts)} | {time.perf_counter() - start:.1f} s |")


def stimulus_sizes(app_dir: Path, db_url: str, name: str, hr_images, methods) -> list[str]:
    prepare.prepare_from_hr(db_url=db_url, app_dir=app_dir, study=name, hr_images=hr_images, methods=methods,
                            calibration_images=0)
    engine = db.get_engine(db_url)
    lines = []
    for method in methods:
        sizes, extra = [], set()
        for image in hr_images:
            data = prepare.stimulus_path(app_dir, name, store.stimulus_file_name(engine, name, image, method)).read_bytes()
            sizes.append(len(data))
            extra |= {k for k in Image.open(io.BytesIO(data)).info}
        lines.append(f"| {name} | {method} | {min(sizes) / 1000:.1f}-{max(sizes) / 1000:.1f} KB | {', '.join(sorted(extra)) or '-'} |")
    return lines


def main() -> int:
    print(f"survey from {Path(prepare.__file__).resolve().parent}")
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/study.sqlite"
        engine = db.get_engine(db_url)
        print("| case | stimuli | per rater | joins | ratings per stimulus (min-max, target 10) | time |")
        print("|---|---|---|---|---|---|")
        for n_images, n_methods, per_rater in ((12, 4, 20), (20, 5, 25)):
            print(balance(engine, "no abandoned joins", n_images, n_methods, per_rater))
            print(balance(engine, "1 abandoned join per finisher", n_images, n_methods, per_rater, abandoned=1))
            print(balance(engine, "5 abandoned joins per finisher", n_images, n_methods, per_rater, abandoned=5))
            print(balance(engine, "1 rater stopping after 3 per finisher", n_images, n_methods, per_rater, stop_after=3))

        print()
        print("| study | method | PNG bytes (min-max) | PNG info keys |")
        print("|---|---|---|---|")
        from srgan.inference import Upscaler

        methods = [m for m in prepare.DEFAULT_METHODS if m == "hr" or m in Upscaler().available_methods()]
        for line in stimulus_sizes(Path(tmp) / "var", db_url, "examples", prepare.example_photos(), methods):
            print(line)
        bsd = Path(os.environ.get("SRGAN_SHARED_DATA", "/work/shared/data")) / "benchmarks/BSD100/HR"
        if bsd.is_dir():
            files = {p.stem: p for p in sorted(bsd.glob("*.png"))[:10]}
            for line in stimulus_sizes(Path(tmp) / "var", db_url, "bsd100-first10", files, ["nearest", "bicubic", "hr"]):
                print(line)
        db.dispose_engine(db_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
