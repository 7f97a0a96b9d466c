"""Every database operation of the study, one short transaction per call.

Callers pass an engine (``survey.study.db.get_engine(url)``). Problems a rater or organiser can fix
raise ``StudyError`` with a message fit to show them; database failures propagate as
SQLAlchemy errors so the UI can say "not saved, please retry" (``NextItemError`` when the
rating was saved and only fetching the next item failed).

Abandoned sessions: in a study with a balanced subset per rater, a session idle for
``idle_limit()`` (SURVEY_ABANDON_MINUTES, default 30) with stimuli still unrated gives its slot
to the next rater who joins, who rates exactly that unrated remainder; so joins that never rate,
or stop early, do not leave holes in the balanced assignment. The session keeps its ratings and
takes no more: if its rater comes back they find it finished.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from survey.ratings import SCORE_LABELS
from survey.study import protocol
from survey.study.db import (
    Image,
    Method,
    Presentation,
    Rater,
    Rating,
    RatingSession,
    Stimulus,
    Study,
    utc_now,
)

RATER_CODE = re.compile(r"[A-Za-z0-9_-]{22,64}")
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_ID = 2**31 - 1  # ids are INTEGER columns (32-bit on PostgreSQL): larger numbers name nothing
DEFAULT_ABANDON_MINUTES = 30.0
CLAIM_CANDIDATES = 4  # abandoned sessions a join reads at once (it may lose some to concurrent joins)
HANDED_ON = (
    "You were away for a long while, so the images left in your session went to another rater. "
    "Your ratings so far are saved; thank you for taking part!"
)

log = logging.getLogger(__name__)


class StudyError(ValueError):
    """A clear, user-facing problem (unknown code, bad score, stale submission, ...)."""


class _SlotChanged(RuntimeError):
    """An abandoned session came back (or was taken) while a join was claiming its slot: retry."""


class NextItemError(RuntimeError):
    """A rating was stored (``status``), but the database failed while fetching the next item."""

    def __init__(self, status: str):
        super().__init__(f"rating {status}, but the next item could not be loaded")
        self.status = status


# ---------------------------------------------------------------- validation (before any query)


def check_rater_code(code: object) -> str:
    text = str(code).strip() if code is not None else ""
    if not text:
        raise StudyError("Please enter your rater code, or ask for a new one.")
    if not RATER_CODE.fullmatch(text):
        raise StudyError(
            "That rater code is not valid: a code is 22 or more letters, digits, '-' or '_' "
            "(copy it exactly from your link)."
        )
    return text


def check_study_name(name: object) -> str:
    text = str(name).strip() if name is not None else ""
    if not STUDY_NAME.fullmatch(text) or ".." in text:
        raise StudyError(
            f"Invalid study name {text!r}: use up to 64 letters, digits, '.', '-' or '_'."
        )
    return text


def parse_score(score: object) -> int:
    """1..5 as an int, from an int or a string of one digit; anything else is refused."""
    if isinstance(score, bool):
        raise StudyError("A score must be a whole number from 1 to 5.")
    if isinstance(score, int):
        value = score
    elif isinstance(score, float) and score.is_integer():
        value = int(score)
    elif isinstance(score, str) and re.fullmatch(r"\s*[0-9]\s*", score):
        value = int(score)
    else:
        raise StudyError("A score must be a whole number from 1 to 5.")
    if not 1 <= value <= 5:
        raise StudyError(f"A score must be from 1 to 5, not {value}.")
    return value


def idle_limit() -> timedelta:
    """How long a session may sit idle, stimuli unrated, before its slot goes to the next rater
    who joins: SURVEY_ABANDON_MINUTES (default 30; 0: at the next join)."""
    text = os.environ.get("SURVEY_ABANDON_MINUTES", "").strip()
    try:
        minutes = float(text) if text else DEFAULT_ABANDON_MINUTES
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and 0 <= minutes <= 60 * 24 * 365):
        log.warning("SURVEY_ABANDON_MINUTES=%r is not a number of minutes from 0 to 525600; using %g",
                    text, DEFAULT_ABANDON_MINUTES)
        minutes = DEFAULT_ABANDON_MINUTES
    return timedelta(minutes=minutes)


def parse_presentation_id(value: object) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise StudyError("This submission does not name a valid image; please reload the page.") from None
    if not 0 < number <= MAX_ID:
        raise StudyError("This submission does not name a valid image; please reload the page.")
    return number


# ---------------------------------------------------------------- studies and stimuli


def ensure_study(
    engine: Engine,
    name: str,
    *,
    per_rater: int | None = None,
    repeats: int = 2,
    calibration_images: int = 2,
) -> int:
    """Create the study if it does not exist; return its id (options of an existing one kept)."""
    name = check_study_name(name)
    with Session(engine) as session, session.begin():
        study = session.scalar(select(Study).where(Study.name == name))
        if study is None:
            study = Study(name=name, per_rater=per_rater, repeats=repeats, calibration_images=calibration_images)
            session.add(study)
            session.flush()
        return study.id


def set_study_options(engine: Engine, name: str, *, per_rater: int | None, repeats: int, calibration_images: int) -> None:
    """Change a study's options; raters who already started keep their plan."""
    with Session(engine) as session, session.begin():
        study = _study(session, name)
        study.per_rater, study.repeats, study.calibration_images = per_rater, repeats, calibration_images


def list_studies(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(Study.name).order_by(Study.name)))


def _study(session: Session, name: str) -> Study:
    study = session.scalar(select(Study).where(Study.name == check_study_name(name)))
    if study is None:
        raise StudyError(f"There is no study named {name!r}.")
    return study


def _get_or_add(session: Session, model, **fields):
    row = session.scalar(select(model).filter_by(**fields))
    if row is None:
        row = model(**fields)
        session.add(row)
        session.flush()
    return row


def stimulus_file_name(engine: Engine, study: str, image: str, method: str) -> str | None:
    """The file of an (image, method) of a study, None when it has none yet."""
    with Session(engine) as session:
        return session.scalar(
            select(Stimulus.file_name)
            .join(Image, Stimulus.image_id == Image.id)
            .join(Method, Stimulus.method_id == Method.id)
            .join(Study, Stimulus.study_id == Study.id)
            .where(Study.name == study, Image.name == image, Method.name == method)
        )


def image_names(engine: Engine, study: str, *, calibration: bool) -> list[str]:
    """The names of a study's rated images, or of its calibration-only images."""
    with Session(engine) as session:
        study_row = _study(session, study)
        return list(session.scalars(
            select(Image.name).where(Image.study_id == study_row.id, Image.calibration.is_(calibration)).order_by(Image.name)
        ))


def register_stimulus(
    engine: Engine, study: str, *, image: str, method: str, file_name: str, width: int, height: int,
    calibration: bool = False,
) -> None:
    """Record (or re-point) the stimulus file of an (image, method).

    ``calibration``: the image is shown only as a calibration example, never rated; an image
    is one or the other for good.
    """
    with Session(engine) as session, session.begin():
        study_row = _study(session, study)
        image_row = session.scalar(select(Image).where(Image.study_id == study_row.id, Image.name == image))
        if image_row is None:
            image_row = Image(study_id=study_row.id, name=image, calibration=calibration)
            session.add(image_row)
            session.flush()
        elif image_row.calibration != calibration:
            role = "a calibration image" if image_row.calibration else "a rated image"
            raise StudyError(
                f"Image {image!r} is already {role} of study {study!r}: calibration images are never rated, "
                f"so one image cannot be both. Give it another name."
            )
        method_row = _get_or_add(session, Method, study_id=study_row.id, name=method)
        stimulus = _get_or_add(session, Stimulus, study_id=study_row.id, image_id=image_row.id, method_id=method_row.id)
        stimulus.file_name, stimulus.width, stimulus.height = file_name, width, height


def study_summary(engine: Engine, study: str) -> dict:
    """Counts for organisers: images, methods, stimuli, raters, ratings, raters needed."""
    with Session(engine) as session:
        study_row = _study(session, study)
        sid = study_row.id
        rated, calibration = _eligible_stimuli(session, sid)
        n_calibration = len({image_id for _, image_id, _ in calibration})
        return {
            "study": study_row.name,
            "images": session.scalar(
                select(func.count(Image.id)).where(Image.study_id == sid, Image.calibration.is_(False))
            ),
            "methods": list(session.scalars(
                select(Method.name).distinct()
                .join(Stimulus, Stimulus.method_id == Method.id)
                .join(Image, Stimulus.image_id == Image.id)
                .where(Method.study_id == sid, Image.calibration.is_(False))
                .order_by(Method.name)
            )),
            "stimuli": len(rated),
            "per_rater": study_row.per_rater,
            "repeats": study_row.repeats,
            "calibration_images": study_row.calibration_images,
            "calibration_images_ready": n_calibration,
            "sessions": session.scalar(select(func.count(RatingSession.id)).where(RatingSession.study_id == sid)),
            # Abandoned sessions whose unrated stimuli went to a later rater (imported ones aside).
            "sessions_handed_on": session.scalar(
                select(func.count(RatingSession.id))
                .join(Rater, RatingSession.rater_id == Rater.id)
                .where(RatingSession.study_id == sid, RatingSession.slot.is_(None), Rater.code.is_not(None))
            ),
            "ratings": session.scalar(
                select(func.count(Rating.id))
                .join(Presentation, Rating.presentation_id == Presentation.id)
                .join(RatingSession, Presentation.session_id == RatingSession.id)
                .where(RatingSession.study_id == sid)
            ),
            "calibration_note": protocol.calibration_note(available=n_calibration, wanted=study_row.calibration_images),
        }


# ---------------------------------------------------------------- raters and their sessions


@dataclass(frozen=True)
class Item:
    """Where a rater stands: the presentation to show now (None when finished)."""

    study: str
    rater_label: str
    presentation_id: int | None
    is_calibration: bool
    calibration_score: int | None
    file_name: str | None
    width: int | None
    height: int | None
    rated: int  # ratings given so far (calibration excluded)
    total: int  # ratings asked for in all
    calibration_seen: int
    calibration_total: int

    @property
    def done(self) -> bool:
        return self.presentation_id is None

    def as_dict(self) -> dict:
        return {
            "study": self.study,
            "rater": self.rater_label,
            "presentation_id": self.presentation_id,
            "kind": "done" if self.done else ("calibration" if self.is_calibration else "rating"),
            "calibration_score": self.calibration_score,
            "width": self.width,
            "height": self.height,
            "rated": self.rated,
            "total": self.total,
            "calibration_seen": self.calibration_seen,
            "calibration_total": self.calibration_total,
        }


def new_rater(engine: Engine, *, consent: bool) -> str:
    """A fresh, unguessable rater code (144 random bits); consent is required."""
    if consent is not True:
        raise StudyError("Please read the instructions and tick the consent box first.")
    code = secrets.token_urlsafe(18)
    with Session(engine) as session, session.begin():
        session.add(Rater(code=code, label="R" + secrets.token_hex(5), consented_at=utc_now()))
    return code


def _rater(session: Session, code: str) -> Rater:
    rater = session.scalar(select(Rater).where(Rater.code == code))
    if rater is None:
        raise StudyError("This rater code is unknown. Check your link, or ask for a new code.")
    return rater


def _eligible_stimuli(
    session: Session, study_id: int
) -> tuple[list[protocol.StimulusKey], list[protocol.StimulusKey]]:
    """The stimuli with a file: (those to rate, those of the calibration-only images)."""
    rows = session.execute(
        select(Stimulus.id, Stimulus.image_id, Method.name, Image.calibration)
        .join(Method, Stimulus.method_id == Method.id)
        .join(Image, Stimulus.image_id == Image.id)
        .where(Stimulus.study_id == study_id, Stimulus.file_name.is_not(None))
        .order_by(Stimulus.id)
    )
    rated, calibration = [], []
    for stimulus_id, image_id, method, is_calibration in rows:
        (calibration if is_calibration else rated).append((stimulus_id, image_id, method))
    return rated, calibration


def _handed_on(rating_session: RatingSession) -> bool:
    """Abandoned, its slot given to another rater (live sessions always hold a slot; imported
    ones have none, but no rater code reaches them)."""
    return rating_session.slot is None


def _unrated_remainder(session: Session, session_id: int) -> list[int]:
    """The stimuli a session was given to rate and has not rated (hidden duplicates aside)."""
    return list(session.scalars(
        select(Presentation.stimulus_id)
        .outerjoin(Rating, Rating.presentation_id == Presentation.id)
        .where(
            Presentation.session_id == session_id,
            Presentation.is_calibration.is_(False),
            Presentation.is_repeat.is_(False),
            Rating.id.is_(None),
        )
        .order_by(Presentation.stimulus_id)
    ))


def _last_active(session: Session, session_id: int) -> datetime:
    """When the session last did anything: joined, was shown an item, or moved past an example
    (every rating is followed by showing the next item)."""
    created, shown, acknowledged = session.execute(
        select(RatingSession.created_at, func.max(Presentation.shown_at), func.max(Presentation.acknowledged_at))
        .outerjoin(Presentation, Presentation.session_id == RatingSession.id)
        .where(RatingSession.id == session_id)
        .group_by(RatingSession.id, RatingSession.created_at)
    ).one()
    return max(t for t in (created, shown, acknowledged) if t is not None)


def _take_abandoned_slot(
    session: Session, study_id: int, stimuli: list[protocol.StimulusKey], *, idle: timedelta
) -> tuple[int, list[protocol.StimulusKey]] | None:
    """Claim the slot of the first session idle for ``idle`` with stimuli unrated: returns the
    slot and that unrated remainder (what the joining rater will rate), or None.

    The database picks the candidates (finished sessions keep their slot for good, so a join
    must not read them all back). The claim moves the slot off the abandoned session
    (UNIQUE(study, slot) then lets only one joiner have it), and is checked again once this
    transaction holds the row: a session that came back in between is left alone.
    """
    cutoff = utc_now() - idle
    by_id = {key[0]: key for key in stimuli}
    lost = False
    for session_id, slot in session.execute(_abandoned_sessions(study_id, cutoff)).all():
        remainder = _unrated_remainder(session, session_id)
        if not any(stimulus_id in by_id for stimulus_id in remainder):
            continue  # rated or its files gone since the query: nothing to hand on
        claimed = session.execute(
            update(RatingSession)
            .where(RatingSession.id == session_id, RatingSession.slot == slot)
            .values(slot=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            lost = True  # another joiner took it first: try the next
            continue
        # Now that this transaction holds the row, look again: the rater may have just come back.
        if _last_active(session, session_id) > cutoff or _unrated_remainder(session, session_id) != remainder:
            raise _SlotChanged()
        return slot, [by_id[stimulus_id] for stimulus_id in remainder if stimulus_id in by_id]
    if lost:
        raise _SlotChanged()  # every candidate read was taken by others: there may be more, look again
    return None


def _abandoned_sessions(study_id: int, cutoff: datetime, *, limit: int = CLAIM_CANDIDATES):
    """(id, slot) of sessions holding a slot, with a stimulus of their plan unrated (its file
    there) and idle since ``cutoff`` at least (joined, shown nothing and acknowledged nothing
    after it: see _last_active). The first few by slot, so a joiner who loses one to another
    can try the next. The test of finished sessions (each keeps its slot for good) runs in the
    database, on the indexes of presentations and ratings: no row of theirs comes back."""
    unrated = (
        select(Presentation.id)
        .where(
            Presentation.session_id == RatingSession.id,
            Presentation.is_calibration.is_(False),
            Presentation.is_repeat.is_(False),
            ~select(Rating.id).where(Rating.presentation_id == Presentation.id).exists(),
            select(Stimulus.id).where(Stimulus.id == Presentation.stimulus_id, Stimulus.file_name.is_not(None)).exists(),
        )
        .exists()
    )
    active_since = (
        select(Presentation.id)
        .where(
            Presentation.session_id == RatingSession.id,
            (Presentation.shown_at > cutoff) | (Presentation.acknowledged_at > cutoff),
        )
        .exists()
    )
    return (
        select(RatingSession.id, RatingSession.slot)
        .where(
            RatingSession.study_id == study_id,
            RatingSession.slot.is_not(None),
            RatingSession.created_at <= cutoff,
            unrated,
            ~active_since,
        )
        .order_by(RatingSession.slot)
        .limit(limit)
    )


def _create_session(engine: Engine, rater_id: int, study_id: int, *, idle: timedelta) -> None:
    """Plan and store a rater's whole sequence; safe against concurrent joins.

    In a study with a balanced subset per rater, the rater takes over the slot of a session
    abandoned for ``idle`` (rating its unrated remainder) when there is one, else the next slot.
    """
    for _ in range(50):
        try:
            with Session(engine) as session, session.begin():
                if session.scalar(
                    select(RatingSession.id).where(RatingSession.rater_id == rater_id, RatingSession.study_id == study_id)
                ):
                    return
                study = session.get(Study, study_id)
                stimuli, calibration_stimuli = _eligible_stimuli(session, study_id)
                if not stimuli:
                    raise StudyError("This study has no images yet; please come back later.")
                taken = None
                if study.per_rater is not None and study.per_rater < len(stimuli):
                    # (When every rater rates everything, an abandoned join leaves no hole.)
                    taken = _take_abandoned_slot(session, study_id, stimuli, idle=idle)
                if taken is not None:
                    slot, assigned = taken
                else:
                    slot, assigned = session.scalar(
                        select(func.coalesce(func.max(RatingSession.slot) + 1, 0))
                        .where(RatingSession.study_id == study_id)
                    ), None
                seed = secrets.randbits(31)
                rating_session = RatingSession(
                    rater_id=rater_id, study_id=study_id, seed=seed, slot=slot, label="S" + secrets.token_hex(5)
                )
                session.add(rating_session)
                session.flush()
                plan = protocol.plan_session(
                    stimuli,
                    calibration_stimuli=calibration_stimuli,
                    slot=slot,
                    seed=seed,
                    per_rater=study.per_rater,
                    repeats=study.repeats,
                    calibration_images=study.calibration_images,
                    assigned=assigned,
                )
                session.add_all(
                    Presentation(
                        session_id=rating_session.id,
                        position=position,
                        stimulus_id=item.stimulus_id,
                        is_calibration=item.is_calibration,
                        is_repeat=item.is_repeat,
                        calibration_score=item.calibration_score,
                    )
                    for position, item in enumerate(plan)
                )
            return
        except (IntegrityError, _SlotChanged):
            continue  # another rater took this slot (or this rater joined twice): look again
    raise StudyError("The study is very busy right now; please retry in a moment.")


def _session_of(session: Session, code: str, study: str) -> tuple[Rater, RatingSession, Study]:
    rater = _rater(session, code)
    study_row = _study(session, study)
    rating_session = session.scalar(
        select(RatingSession).where(RatingSession.rater_id == rater.id, RatingSession.study_id == study_row.id)
    )
    if rating_session is None:
        raise StudyError("You have not joined this study yet; please start it first.")
    return rater, rating_session, study_row


def _current_presentation(session: Session, session_id: int) -> Presentation | None:
    """The first presentation not finished: calibration not acknowledged, or not rated."""
    rated = select(Rating.presentation_id)
    return session.scalar(
        select(Presentation)
        .where(
            Presentation.session_id == session_id,
            ((Presentation.is_calibration.is_(True)) & Presentation.acknowledged_at.is_(None))
            | ((Presentation.is_calibration.is_(False)) & Presentation.id.not_in(rated)),
        )
        .order_by(Presentation.position)
        .limit(1)
    )


def _item(session: Session, rater: Rater, rating_session: RatingSession, study: Study, *, mark_shown: bool) -> Item:
    # A session whose slot went to another rater takes no more ratings: it is finished.
    current = None if _handed_on(rating_session) else _current_presentation(session, rating_session.id)
    counts = session.execute(
        select(
            func.count(Presentation.id).filter(Presentation.is_calibration.is_(False)),
            func.count(Rating.id),
            func.count(Presentation.id).filter(Presentation.is_calibration.is_(True)),
            func.count(Presentation.acknowledged_at),
        )
        .outerjoin(Rating, Rating.presentation_id == Presentation.id)
        .where(Presentation.session_id == rating_session.id)
    ).one()
    stimulus = current.stimulus if current is not None else None
    if current is not None and mark_shown:
        current.shown_at = utc_now()
    return Item(
        study=study.name,
        rater_label=rater.label,
        presentation_id=current.id if current is not None else None,
        is_calibration=bool(current is not None and current.is_calibration),
        calibration_score=current.calibration_score if current is not None else None,
        file_name=stimulus.file_name if stimulus is not None else None,
        width=stimulus.width if stimulus is not None else None,
        height=stimulus.height if stimulus is not None else None,
        rated=counts[1],
        total=counts[1] if _handed_on(rating_session) else counts[0],
        calibration_seen=counts[3],
        calibration_total=counts[2],
    )


def join_study(engine: Engine, code: str, study: str, *, idle: timedelta | None = None) -> Item:
    """Start (first time) or resume a rater's session; returns the item to show now.

    ``idle``: how long a session must sit idle before a new rater takes over its unrated
    stimuli (default ``idle_limit()``)."""
    code = check_rater_code(code)
    with Session(engine) as session:
        rater = _rater(session, code)
        study_row = _study(session, study)
        rater_id, study_id = rater.id, study_row.id
    _create_session(engine, rater_id, study_id, idle=idle_limit() if idle is None else idle)
    return next_item(engine, code, study)


def next_item(engine: Engine, code: str, study: str) -> Item:
    """The item to show now; records that it was shown (response times count from here)."""
    code = check_rater_code(code)
    with Session(engine) as session, session.begin():
        rater, rating_session, study_row = _session_of(session, code, study)
        return _item(session, rater, rating_session, study_row, mark_shown=True)


def acknowledge_calibration(engine: Engine, code: str, study: str, presentation_id: object) -> Item:
    """The rater has seen a calibration example and moves on (idempotent)."""
    code = check_rater_code(code)
    pid = parse_presentation_id(presentation_id)
    with Session(engine) as session, session.begin():
        rater, rating_session, _ = _session_of(session, code, study)
        presentation = session.get(Presentation, pid)
        if presentation is None or presentation.session_id != rating_session.id or not presentation.is_calibration:
            raise StudyError("This is not one of your calibration examples; please reload the page.")
        if presentation.acknowledged_at is None:
            presentation.acknowledged_at = utc_now()
    return next_item(engine, code, study)


TOO_FAST = "too fast"


@dataclass(frozen=True)
class RatingResult:
    status: str  # "saved", "already saved", or TOO_FAST (nothing stored, nothing marked shown)
    item: Item | None  # what to show next; None when TOO_FAST (the same image stays on screen)


def submit_rating(
    engine: Engine, code: str, study: str, presentation_id: object, score: object, *, min_response_ms: int = 0
) -> RatingResult:
    """Store one rating, committed at once.

    The same score sent again is acknowledged as "already saved"; a different score for a rated
    image, a rating for an image not yet shown or not the current one, is refused: never a
    second vote. A rating sooner than ``min_response_ms`` after its image was shown is not
    stored (status TOO_FAST): the floor is checked against the shown time the rating would
    store, in the same transaction.
    """
    code = check_rater_code(code)
    pid = parse_presentation_id(presentation_id)
    value = parse_score(score)
    floor = timedelta(milliseconds=min_response_ms or 0)
    try:
        with Session(engine) as session, session.begin():
            status = _store_rating(session, code, study, pid, value, floor=floor)
    except IntegrityError:
        # A concurrent submission of the same presentation won: report what is stored.
        with Session(engine) as session:
            status = _existing_rating_status(session, pid, value)
            if status is None:
                raise
    if status == TOO_FAST:
        return RatingResult(status=status, item=None)  # showing the item again would restart its clock
    try:
        item = next_item(engine, code, study)
    except SQLAlchemyError as error:  # the rating is safe: say so, not "not saved"
        raise NextItemError(status) from error
    return RatingResult(status=status, item=item)


def _existing_rating_status(session: Session, pid: int, score: int) -> str | None:
    existing = session.scalar(select(Rating).where(Rating.presentation_id == pid))
    if existing is None:
        return None
    if existing.score == score:
        return "already saved"
    raise StudyError(
        f"This image was already rated {existing.score} ({SCORE_LABELS[existing.score]}); "
        "a rating cannot be changed."
    )


def _store_rating(session: Session, code: str, study: str, pid: int, score: int, *, floor: timedelta) -> str:
    _, rating_session, _ = _session_of(session, code, study)
    presentation = session.get(Presentation, pid)
    if presentation is None or presentation.session_id != rating_session.id:
        raise StudyError("This image is not part of your session; please reload the page.")
    if presentation.is_calibration:
        raise StudyError("This is a calibration example: it is not rated. Press Continue.")
    status = _existing_rating_status(session, pid, score)
    if status is not None:
        return status
    if _handed_on(rating_session):
        raise StudyError(HANDED_ON)
    current = _current_presentation(session, rating_session.id)
    if current is None or current.id != pid or presentation.shown_at is None:
        raise StudyError("This image is not the one to rate now (an old or replayed page?); please reload.")
    answered_at = utc_now()
    shown_at = presentation.shown_at
    if answered_at - shown_at < floor:
        return TOO_FAST  # nothing stored: the rater looks at the image, then presses again
    session.add(
        Rating(
            presentation_id=pid,
            score=score,
            shown_at=shown_at,
            answered_at=answered_at,
            response_ms=max(0, round((answered_at - shown_at).total_seconds() * 1000)),
        )
    )
    session.flush()  # surface a constraint violation here, inside the transaction
    # Look again holding the session's row (PostgreSQL) or the database's write lock (SQLite):
    # a join may have handed this session's slot on since it was read.
    slot = session.scalar(select(RatingSession.slot).where(RatingSession.id == rating_session.id).with_for_update())
    if slot is None:
        raise StudyError(HANDED_ON)
    return "saved"


def session_ratings(engine: Engine, code: str, study: str) -> list[tuple[int, int, int]]:
    """(position, presentation id, score) of a rater's ratings, for checks and tests."""
    code = check_rater_code(code)
    with Session(engine) as session:
        _, rating_session, _ = _session_of(session, code, study)
        rows = session.execute(
            select(Presentation.position, Presentation.id, Rating.score)
            .join(Rating, Rating.presentation_id == Presentation.id)
            .where(Presentation.session_id == rating_session.id)
            .order_by(Presentation.position)
        )
        return [(r[0], r[1], r[2]) for r in rows]


def session_plan(engine: Engine, code: str, study: str) -> list[dict]:
    """A rater's whole sequence (for tests and the organiser): stimulus, image, flags."""
    code = check_rater_code(code)
    with Session(engine) as session:
        _, rating_session, _ = _session_of(session, code, study)
        rows = session.execute(
            select(Presentation, Stimulus.image_id, Method.name)
            .join(Stimulus, Presentation.stimulus_id == Stimulus.id)
            .join(Method, Stimulus.method_id == Method.id)
            .where(Presentation.session_id == rating_session.id)
            .order_by(Presentation.position)
        )
        return [
            {
                "position": p.position,
                "presentation_id": p.id,
                "stimulus_id": p.stimulus_id,
                "image_id": image_id,
                "method": method,
                "is_calibration": p.is_calibration,
                "is_repeat": p.is_repeat,
                "calibration_score": p.calibration_score,
                "seed": rating_session.seed,
                "slot": rating_session.slot,
            }
            for p, image_id, method in rows
        ]
