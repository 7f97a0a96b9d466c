"""The ratings contract: what the study writes and the analysis reads, defined once.

One row per rating, exactly these columns (``COLUMNS``):

    study, rater, session, image, method, score, repeat, shown_at, answered_at, response_ms

``rater`` is the public label (never the secret code), ``repeat`` is 0 for a first showing and 1
for its hidden duplicate (the only two values), times are UTC. Only first showings enter a MOS;
duplicates feed test-retest. Calibration examples are never rated, so never appear here.

Both rooms of ``survey`` use this module and nothing else defines these: the study
(``survey.study``: storage, export, import) writes and reads ratings through ``validate``,
``read_csv`` and ``write_csv``; the analysis (``survey.analysis``) takes a frame that ``validate``
returned. This module imports neither room.

Validation, one rule for every source (CSV file, database, a frame built in Python):
ids (study, rater, session, image, method) are text with surrounding whitespace trimmed, and
rater, image and method may not be blank; score is a whole number 1..5; repeat 0 or 1; response_ms a
whole number of milliseconds >= 0 or blank; times ISO 8601 or blank. Errors raise
``RatingsError`` naming the file's own line (blank lines counted, the header is line 1).
Method and rater names are always strings: a method called "nan" or "NA" stays that name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = (
    "study", "rater", "session", "image", "method", "score",
    "repeat", "shown_at", "answered_at", "response_ms",
)
ID_COLUMNS = ("study", "rater", "session", "image", "method")
REQUIRED_COLUMNS = ("rater", "image", "method", "score")
TIME_COLUMNS = ("shown_at", "answered_at")
# One rating per rater, stimulus and showing: the key under which rows are duplicates.
DUPLICATE_KEY = ("study", "rater", "image", "method", "repeat")

SCORES = (1, 2, 3, 4, 5)
SCORE_LABELS = {1: "Bad", 2: "Poor", 3: "Fair", 4: "Good", 5: "Excellent"}  # ITU-T P.800 ACR
FIRST_SHOWING, HIDDEN_DUPLICATE = 0, 1
REPEATS = (FIRST_SHOWING, HIDDEN_DUPLICATE)

# Condition roles. The reference (the original HR photo) is the best a method can look and is
# shown in calibration as the example of 5; nearest-neighbour upscaling is the example of 1. Both
# are also hidden among the rated stimuli as gold items: a rater who scores the reference below
# nearest on the same image is not looking.
REFERENCE = "hr"
LOW_ANCHOR = "nearest"
CALIBRATION_LOW, CALIBRATION_HIGH = LOW_ANCHOR, REFERENCE
GOLD_LOW, GOLD_HIGH = LOW_ANCHOR, REFERENCE
GOLD_METHODS = (GOLD_LOW, GOLD_HIGH)
# The paper's BSD100 conditions in the order its tables use; other methods follow by name.
PAPER_ORDER = ("nearest", "bicubic", "srresnet", "srgan", "hr")


class RatingsError(ValueError):
    """Ratings that cannot be used; str() is a message for the user, naming the line."""


def method_order(names: Iterable[str]) -> list[str]:
    """The paper's conditions first in their usual order, then any others sorted."""
    names = set(names)
    return [m for m in PAPER_ORDER if m in names] + sorted(names - set(PAPER_ORDER))


def first_showings(ratings: pd.DataFrame) -> pd.DataFrame:
    """The ratings that enter a MOS: every stimulus's first showing to each rater."""
    return ratings[ratings["repeat"] == FIRST_SHOWING]


def duplicated(ratings: pd.DataFrame) -> np.ndarray:
    """True for every row that repeats an earlier row's DUPLICATE_KEY (the first is kept)."""
    if ratings.empty:
        return np.zeros(0, dtype=bool)
    return ratings.duplicated(list(DUPLICATE_KEY), keep="first").to_numpy()


def _line_list(lines: np.ndarray, mask: np.ndarray, limit: int = 5) -> str:
    shown = [str(int(n)) for n in lines[mask][:limit]]
    more = int(mask.sum()) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def validate(raw: pd.DataFrame, *, source: str = "the ratings", lines: Sequence[int] | None = None,
             complete: bool = False, refuse_duplicates: bool = False) -> pd.DataFrame:
    """The ratings as the contract's typed frame (exactly COLUMNS, a fresh 0..n-1 index).

    ``complete``: every column must be there and no other (an import); otherwise only rater,
    image, method and score are needed and the others are filled in (study and session "",
    repeat 0, no times). ``lines``: each row's line in its file (default: row + 2, after a
    header). ``refuse_duplicates``: rows sharing rater, image, method and repeat are an error
    (the importer); otherwise they are kept for the caller to merge and count.
    """
    n = len(raw)
    lines = np.arange(2, n + 2) if lines is None else np.asarray(lines)
    present = [c for c in COLUMNS if c in raw.columns]
    if complete:
        missing = [c for c in COLUMNS if c not in raw.columns]
        extra = [str(c) for c in raw.columns if c not in COLUMNS]
        if missing or extra:
            raise RatingsError(
                f"{source}: expected exactly the columns {', '.join(COLUMNS)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unexpected {', '.join(extra)}" if extra else ""))
    else:
        missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
        if missing:
            raise RatingsError(f"{source} is missing column(s): {', '.join(missing)} "
                               f"(expected columns: {', '.join(COLUMNS)})")

    def refuse(mask: np.ndarray, what: str, values: pd.Series | None = None) -> None:
        if mask.any():
            where = f"line {_line_list(lines, mask)}"
            if values is not None:
                where += f" has {values[mask].iloc[0]!r}"
            raise RatingsError(f"{source}: {what}; {where}")

    out = {}
    for column in ID_COLUMNS:
        if column not in present:
            out[column] = np.full(n, "", dtype=object)
            continue
        values = raw[column]
        blank_cell = values.isna().to_numpy()
        text = values.astype(str).str.strip()
        text[blank_cell] = ""
        if column in ("rater", "image", "method"):
            refuse((text == "").to_numpy(), f"column '{column}' is empty")
        out[column] = text.to_numpy(dtype=object)
    out["score"] = _whole_numbers(raw["score"], "score", lines, source, allowed=SCORES)
    if "repeat" in present:
        out["repeat"] = _whole_numbers(raw["repeat"], "repeat", lines, source, allowed=REPEATS)
    else:
        out["repeat"] = np.zeros(n, dtype=np.int64)
    for column in TIME_COLUMNS:
        if column not in present:
            out[column] = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]").array
            continue
        values = raw[column]
        text = _cell_text(values)
        if pd.api.types.is_datetime64_any_dtype(values):
            parsed = pd.to_datetime(values.reset_index(drop=True), utc=True)
        else:
            parsed = pd.to_datetime(text.replace("", None), utc=True, errors="coerce", format="ISO8601")
        refuse((parsed.isna() & (text != "")).to_numpy(), f"{column} is not an ISO 8601 time",
               values.reset_index(drop=True))
        out[column] = parsed.reset_index(drop=True).array
    if "response_ms" in present:
        values = raw["response_ms"]
        text = _cell_text(values)
        numbers = pd.to_numeric(text.replace("", None), errors="coerce")
        bad = (text != "") & (numbers.isna() | (numbers != np.round(numbers)) | (numbers < 0))
        refuse(bad.to_numpy(), "response_ms must be a whole number of milliseconds",
               values.reset_index(drop=True))
        out["response_ms"] = pd.array(numbers.to_numpy(), dtype="Int64")
    else:
        out["response_ms"] = pd.array([pd.NA] * n, dtype="Int64")
    frame = pd.DataFrame(out, columns=list(COLUMNS))
    if refuse_duplicates:
        twice = frame.duplicated(list(DUPLICATE_KEY), keep=False).to_numpy()
        refuse(twice, "the same rater rated the same image and method twice with the same repeat flag")
    return frame


def _cell_text(values: pd.Series) -> pd.Series:
    """A time or number column's cells as trimmed text; "" where missing (a blank CSV cell, or
    None, NaN, NaT or NA, also as the text a frame cast to str holds)."""
    text = values.astype(str).str.strip().where(values.notna(), "").reset_index(drop=True)
    return text.where(~text.isin(["nan", "NaN", "NaT", "None", "<NA>"]), "")


def _whole_numbers(values: pd.Series, name: str, lines: np.ndarray, source: str, *,
                   allowed: Sequence[int]) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    else:
        numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    original = values.reset_index(drop=True)
    bad = np.isnan(numbers) | (numbers != np.round(numbers))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RatingsError(f"{source}: {name} must be a whole number; line {lines[row]} has "
                           f"{original.iloc[row]!r}")
    bad = ~np.isin(numbers, np.asarray(allowed, dtype=np.float64))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        span = f"{allowed[0]} or {allowed[1]}" if len(allowed) == 2 else f"in {allowed[0]}..{allowed[-1]}"
        raise RatingsError(f"{source}: {name} must be {span}; line {lines[row]} has "
                           f"{original.iloc[row]!r}")
    return numbers.astype(np.int64)


def read_csv(path: str | Path, *, complete: bool = False, refuse_duplicates: bool = False) -> pd.DataFrame:
    """A ratings CSV (plain or .gz), validated; every problem is a RatingsError, never a traceback.

    Every cell is read as text, so no name turns into a number or a missing value. Blank lines are
    skipped but counted, so an error names the line an editor shows.
    """
    path = Path(path)
    if not path.is_file():
        raise RatingsError(f"no such ratings file: {path}")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise RatingsError(f"{path} is empty: expected a header line with the columns "
                           f"{', '.join(COLUMNS)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as error:
        raise RatingsError(f"{path} is not a readable CSV file ({error})") from None
    lines = np.arange(2, len(raw) + 2)
    blank = (raw == "").all(axis=1).to_numpy() if len(raw.columns) else np.zeros(len(raw), bool)
    raw, lines = raw[~blank].reset_index(drop=True), lines[~blank]
    if complete and raw.empty:
        raise RatingsError(f"{path} holds no ratings.")
    return validate(raw, source=str(path), lines=lines, complete=complete,
                    refuse_duplicates=refuse_duplicates)


def write_csv(ratings: pd.DataFrame, path: str | Path) -> Path:
    """Write a validated frame as the agreed CSV (times ISO 8601 UTC, blank when unknown)."""
    missing = [c for c in COLUMNS if c not in ratings.columns]
    if missing:
        raise RatingsError(f"the ratings table lacks the column(s) {', '.join(missing)}")
    out = ratings[list(COLUMNS)].copy()
    for column in TIME_COLUMNS:
        out[column] = out[column].map(lambda t: "" if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def select_study(ratings: pd.DataFrame, study: str | None) -> tuple[pd.DataFrame, str]:
    """The ratings of one study, and its name: ``study`` if given, else the only one present."""
    studies = sorted(s for s in ratings["study"].unique() if s)
    if study is not None:
        study = study.strip()
        chosen = ratings[ratings["study"] == study]
        if chosen.empty and studies:
            raise RatingsError(f"no ratings for study {study!r}; studies present: {', '.join(studies)}")
        return chosen, study
    if len(studies) > 1:
        raise RatingsError(f"the ratings hold several studies ({', '.join(studies)}); choose one with --study")
    return ratings, studies[0] if studies else ""
