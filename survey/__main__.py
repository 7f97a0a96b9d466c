"""Run the MOS study on its own: ``python -m survey [--study NAME]``.

Serves only the study tab, for raters: no demo and no results tab (``python app.py``
serves it next to the demo; there, send raters ``http://HOST:PORT/?study``). Raters open
``http://HOST:PORT/`` (new) or ``http://HOST:PORT/?rater=CODE`` (continue).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from survey import store
from sqlalchemy.exc import SQLAlchemyError

from survey.db import SchemaVersionError, default_app_dir, default_db_url, display_url, get_engine
from survey.prepare import DEFAULT_STUDY, ensure_default_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m survey", description="Serve the MOS study to raters.")
    parser.add_argument("--study", default=DEFAULT_STUDY, help="study to serve (made by python -m survey.prepare)")
    parser.add_argument("--db", "--db-url", dest="db", help="SQLAlchemy URL (default: env SURVEY_DB_URL or <app dir>/study.sqlite)")
    parser.add_argument("--app-dir", type=Path, default=None, help="app state folder (default: env SRGAN_APP_DIR or var/)")
    parser.add_argument("--host", default=os.environ.get("SRGAN_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=os.environ.get("SRGAN_PORT", 7860))
    args = parser.parse_args(argv)
    app_dir = args.app_dir or default_app_dir()
    db_url = args.db or default_db_url(app_dir)
    try:
        if args.study == DEFAULT_STUDY:
            ensure_default_study(db_url=db_url, app_dir=app_dir)
        elif args.study not in store.list_studies(get_engine(db_url)):
            raise store.StudyError(f"No study {args.study!r} in {db_url}; make it with python -m survey.prepare.")
    except (store.StudyError, SchemaVersionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:  # unreachable server, bad URL: one line, not a traceback
        print(f"error: the study database {display_url(db_url)} failed: {error}", file=sys.stderr)
        return 2

    # As app.py: no analytics or version check over the network.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from survey.study_tab import build_study_tab

    with gr.Blocks(title="MOS study") as demo:
        with gr.Tab("MOS study"):
            build_study_tab(db_url=db_url, app_dir=app_dir, study=args.study)
    demo.launch(server_name=args.host, server_port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
