"""Run the MOS study on its own: ``python -m survey [--study NAME]``.

Serves only the study tab, for raters: no demo and no results tab (``python app.py``
serves it next to the demo; there, send raters ``http://HOST:PORT/?study``). Raters open
``http://HOST:PORT/`` (new) or ``http://HOST:PORT/?rater=CODE`` (continue).

``--join-key KEY`` (SURVEY_JOIN_KEY) makes the study invitation-only: send new raters
``http://HOST:PORT/?key=KEY``. ``--joins-per-hour`` (SURVEY_JOINS_PER_HOUR, default 30) caps
new raters per client address, ``--min-rating-ms`` (SURVEY_MIN_RATING_MS, default 300)
refuses ratings sooner than that after the image was shown; 0 turns either off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# As app.py, before gradio is imported: no analytics or version check over the network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from survey.study import store  # noqa: E402
from survey.study.admission import BodySizeLimit, limit_queue  # noqa: E402
from survey.study.cleanup import close_engines, stop_on_sigterm  # noqa: E402
from survey.study.db import (  # noqa: E402
    DatabaseCheckError, SchemaVersionError, check_database, default_app_dir, default_db_url, display_url, get_engine,
)
from survey.study.prepare import DEFAULT_STUDY, ensure_default_study  # noqa: E402
from survey.study.study_tab import CONCURRENCY, add_limit_arguments, build_study_tab, limit_options  # noqa: E402

MAX_BODY_BYTES = 2**20  # the study's calls carry a code and two numbers; no uploads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m survey", description="Serve the MOS study to raters.")
    parser.add_argument("--study", default=DEFAULT_STUDY, help="study to serve (made by python -m survey.prepare)")
    parser.add_argument("--db", "--db-url", dest="db", help="SQLAlchemy URL (default: env SURVEY_DB_URL or <app dir>/study.sqlite)")
    parser.add_argument("--app-dir", type=Path, default=None, help="app state folder (default: env SRGAN_APP_DIR or var/)")
    parser.add_argument("--host", default=os.environ.get("SRGAN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("SRGAN_PORT", 7860))
    add_limit_arguments(parser)
    args = parser.parse_args(argv)
    limits = limit_options(parser, args)
    app_dir = args.app_dir or default_app_dir()
    db_url = args.db or default_db_url(app_dir)
    try:
        # Before anything is written: a missing, emptied or damaged database is refused, not replaced.
        check_database(db_url, app_dir)
        if args.study == DEFAULT_STUDY:
            ensure_default_study(db_url=db_url, app_dir=app_dir)
        elif args.study not in store.list_studies(get_engine(db_url)):
            raise store.StudyError(f"No study {args.study!r} in {db_url}; make it with python -m survey.prepare.")
    except (store.StudyError, SchemaVersionError, DatabaseCheckError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:  # unreachable server, bad URL: one line, not a traceback
        print(f"error: the study database {display_url(db_url)} failed: {error}", file=sys.stderr)
        return 2

    with gr.Blocks(title="MOS study") as demo:
        with gr.Tab("MOS study"):
            build_study_tab(db_url=db_url, app_dir=app_dir, study=args.study, **limits)
    if args.join_key:
        print(f"Invitation-only: send new raters http://{args.host}:{args.port}/?key=<the join key>", flush=True)
    demo.queue(api_open=False)
    limit_queue(demo, study_concurrency_id=CONCURRENCY)  # as app.py: typed inputs, bounded queue
    stop_on_sigterm()
    try:
        demo.launch(server_name=args.host, server_port=args.port, show_error=False, enable_monitoring=False,
                    app_kwargs={"middleware": [Middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)]})
    finally:
        close_engines()  # checkpoints SQLite's WAL: study.sqlite alone then holds every rating
    return 0


if __name__ == "__main__":
    sys.exit(main())
