"""The whole SRGAN app in one Gradio server: the comparison demo, the MOS study, the results.

    python app.py [--host 127.0.0.1] [--port 7860] [--device cpu] [--app-dir var] ...

Every option also reads an environment variable (SRGAN_HOST, SRGAN_PORT,
SRGAN_SHARE, SRGAN_DEVICE, SRGAN_PRECISION, SRGAN_MAX_PIXELS, SRGAN_MAX_UPLOAD_MB, SURVEY_DB_URL,
SURVEY_STUDY, SRGAN_APP_DIR, SRGAN_ADMIN_TOKEN, SRGAN_LOCAL_DEMO, SRGAN_CONCURRENCY, SURVEY_JOIN_KEY,
SURVEY_JOINS_PER_HOUR, SURVEY_MIN_RATING_MS; the cache's SRGAN_CACHE_MB and SRGAN_CACHE_MINUTES are
environment only);
options win over the environment. ``--study NAME`` picks the study the MOS tab serves
(made with ``python -m survey.prepare``); send raters ``http://HOST:PORT/?study``: that
link and their own ``?rater=CODE`` links open on the study tab (``python -m survey``
serves the study alone). The results tab needs an admin token (16
characters or more); ``--local-demo`` makes a random one and prints it, on a loopback
host only. Nothing is downloaded: the models load from the package (or
SRGAN_WEIGHTS_DIR) and the example photos come from scikit-image.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Before gradio is imported: no analytics or version check over the network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from starlette.middleware import Middleware  # noqa: E402

from survey.study.admission import BodySizeLimit, limit_queue  # noqa: E402
from demo.compare import LABELS  # noqa: E402
from demo.ui import CSS, build_demo_tab  # noqa: E402
from srgan.images import DEFAULT_MAX_BYTES, default_max_pixels  # noqa: E402
from srgan.inference import PRECISIONS, Upscaler, parse_device, resolve_precision  # noqa: E402
from srgan.weights import METHOD_WEIGHTS, is_available, missing_line  # noqa: E402
from survey.study.admin_tab import build_results_tab  # noqa: E402
from survey.study.db import default_app_dir, sqlite_path  # noqa: E402
from survey.study.prepare import DEFAULT_STUDY, ensure_default_study  # noqa: E402
from survey.study.study_tab import CONCURRENCY as STUDY_CONCURRENCY  # noqa: E402
from survey.study.study_tab import add_limit_arguments, build_study_tab, limit_options  # noqa: E402

TITLE = "SRGAN: photo-realistic 4x super-resolution"
# Gradio refuses larger uploads before writing them; srgan.images refuses them anyway.
DEFAULT_MAX_UPLOAD_MB = DEFAULT_MAX_BYTES / 2**20
MIN_ADMIN_TOKEN = 16  # characters; a short token could be guessed


@dataclass(frozen=True)
class AppConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    device: str = "cpu"
    precision: str = "auto"  # the networks': bf16 on a CPU with bf16 in hardware, else fp32
    max_pixels: int | None = None  # None: SRGAN_MAX_PIXELS or srgan.images.DEFAULT_MAX_PIXELS
    db_url: str | None = None  # None: sqlite:///<app_dir>/study.sqlite
    app_dir: Path = field(default_factory=default_app_dir)
    admin_token: str | None = None
    concurrency: int = 1  # requests run at once per event; more would starve a small CPU
    study: str = "examples"  # the study the MOS tab serves; "examples" is made on first start
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB  # Gradio refuses larger uploads before saving them
    local_demo: bool = False  # the admin token was made up for this run (printed at start)
    # The study's defences against stuffing: join_key, joins_per_hour, min_rating_ms (survey.study.study_tab).
    study_limits: dict = field(default_factory=dict)

    @property
    def study_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.app_dir / 'study.sqlite'}"


def _build_study_tab(config: AppConfig) -> None:
    if config.study == DEFAULT_STUDY:
        ensure_default_study(db_url=config.study_db_url, app_dir=config.app_dir)
    build_study_tab(db_url=config.study_db_url, app_dir=config.app_dir, study=config.study, **config.study_limits)


def _build_results_tab(config: AppConfig) -> None:
    # Reports go to a private temporary folder, removed at exit: Gradio copies what the tab
    # shows into its cache, and the folder is never among the paths the server serves.
    from survey.study.cleanup import private_report_dir

    out_dir = private_report_dir()
    build_results_tab(db_url=config.study_db_url, admin_token=config.admin_token, out_dir=out_dir)


def build_app(config: AppConfig) -> gr.Blocks:
    """The app's Blocks, ready for .queue().launch(); tests build it in-process."""
    config.app_dir.mkdir(parents=True, exist_ok=True)
    from survey.study.cleanup import use_app_cache

    # Before any component is made (each notes the cache folder): the app's own cache, which its
    # janitor prunes, never the /tmp/gradio that other Gradio apps share.
    use_app_cache(config.app_dir)
    upscaler = Upscaler(device=config.device, precision=config.precision)  # one per app: each model is loaded once
    max_pixels = config.max_pixels if config.max_pixels is not None else default_max_pixels()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\nAn open reproduction of Ledig et al., CVPR 2017 (arXiv 1609.04802).")
        with gr.Tabs() as tabs:
            with gr.Tab("Compare", id="compare"):
                build_demo_tab(upscaler=upscaler, max_pixels=max_pixels, app_dir=config.app_dir)
            with gr.Tab("MOS study", id="study"):
                _build_study_tab(config)
            with gr.Tab("Results (admin)", id="results"):
                _build_results_tab(config)
        # Off the queue: a page opening must not wait behind the demo's comparisons.
        app.load(landing_tab, outputs=tabs, queue=False, api_visibility="private")
    # api_open=False: the REST route /run/<name> would run queued events around the queue.
    app.queue(default_concurrency_limit=config.concurrency, api_open=False)
    # The study and the demo each get their own bound, one client a fair share of the demo:
    # a flood of comparisons must never lock raters out (survey.study.admission).
    limit_queue(app, study_concurrency_id=STUDY_CONCURRENCY)
    return app


def missing_weights_warnings() -> list[str]:
    """One line per missing weights file, said at start-up rather than at the first comparison."""
    return [
        f"warning: the {LABELS[method]} panel stays empty and the alpha slider is off (bicubic works): "
        f"missing {missing_line(name)}"
        for method, name in METHOD_WEIGHTS.items() if not is_available(name)
    ]


def landing_tab(request: gr.Request):
    """Rater links (``?rater=CODE``) and study invitations (``?study``, ``?key=KEY``) open on the MOS study."""
    params = request.query_params if request is not None else {}
    if "rater" in params or "study" in params or "key" in params:
        return gr.Tabs(selected="study")
    return gr.skip()


def launch(app: gr.Blocks, config: AppConfig, *, block: bool = True, cache_policy=None) -> str:
    """Start the app made by build_app; return its local URL. Blocking, it returns once stopped
    (Ctrl-C, SIGTERM), with the database checkpointed (the .sqlite file alone holds every rating).
    ``cache_policy``: a survey.study.cleanup.CachePolicy, default SRGAN_CACHE_MB / SRGAN_CACHE_MINUTES."""
    from survey.study import cleanup

    housekeeping = cleanup.Housekeeping(app, cache_dir=Path(gr.utils.get_upload_folder()),
                                        policy=cache_policy or cleanup.CachePolicy.from_env())
    app.launch(
        server_name=config.host,
        server_port=config.port,
        share=config.share,
        # Serve the example photos and the demo's downloads only: never the app folder
        # itself, which holds the study database, the stimuli and the reports.
        allowed_paths=[str(config.app_dir / "examples"), str(config.app_dir / "demo_outputs")],
        blocked_paths=_private_paths(config),
        max_file_size=int(config.max_upload_mb * 1024 * 1024),
        # Any body (a data: URL in an API call too) is bounded: an upload, base64's third and a margin.
        # OneShotDownloads: the admin's ratings CSV is deleted once downloaded (survey.study.cleanup).
        app_kwargs={"middleware": [Middleware(BodySizeLimit, max_bytes=max_body_bytes(config.max_upload_mb)),
                                   Middleware(cleanup.OneShotDownloads)]},
        # Our handlers raise gr.Error with a message that says what to do; anything else is a
        # bug or a malformed call, and its raw text would show the server's internals.
        show_error=False,
        enable_monitoring=False,  # /monitoring would print its secret dashboard link to the log
        css=CSS,
        prevent_thread_lock=True,
        quiet=True,
    )
    housekeeping.start()
    url = app.local_url or f"http://{config.host}:{config.port}/"
    print(f"SRGAN app running at {url}", flush=True)
    if config.local_demo:
        print(f"Local demo mode: the Results tab's admin token is {config.admin_token}", flush=True)
    if app.share_url:
        print(f"Public share link: {app.share_url}", flush=True)
    if block:
        cleanup.stop_on_sigterm()
        try:
            app.block_thread()
        finally:
            housekeeping.stop()
    return url


def max_body_bytes(max_upload_mb: float) -> int:
    """The largest request body: an upload at the limit, as base64 (4/3) inside JSON, plus 1 MiB."""
    return int(max_upload_mb * 2**20 * 4 / 3) + 2**20


def _private_paths(config: AppConfig) -> list[str]:
    """Never served, whatever else is allowed: the SQLite study database and the study's files."""
    paths = [config.app_dir / "studies", config.app_dir / "results"]
    database = sqlite_path(config.study_db_url)
    if database is not None:
        paths += [database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")]
    return [str(path) for path in paths]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None) -> AppConfig:
    env = os.environ
    # Defaults from the environment stay strings: argparse converts them with the option's
    # type, so a bad value gets a usage error naming the option, not a traceback.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=env.get("SRGAN_HOST", "127.0.0.1"), help="address to bind (SRGAN_HOST)")
    parser.add_argument("--port", type=int, default=env.get("SRGAN_PORT", 7860), help="port (SRGAN_PORT)")
    parser.add_argument("--share", action=argparse.BooleanOptionalAction, default=_env_flag("SRGAN_SHARE"),
                        help="also open a public Gradio share link (SRGAN_SHARE; needs the internet)")
    parser.add_argument("--device", default=env.get("SRGAN_DEVICE", "cpu"), help="torch device: cpu or cuda")
    parser.add_argument("--precision", default=env.get("SRGAN_PRECISION", "auto"), choices=PRECISIONS,
                        help="the networks' precision (SRGAN_PRECISION): auto is bf16 on a CPU with bf16 in "
                             "hardware (AVX512-BF16, AMX), else fp32; fp16 on CUDA only")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse larger input images (SRGAN_MAX_PIXELS; default 4 megapixels)")
    parser.add_argument("--db-url", default=env.get("SURVEY_DB_URL"),
                        help="study database URL (SURVEY_DB_URL; default sqlite:///<app dir>/study.sqlite)")
    parser.add_argument("--app-dir", type=Path, default=None,
                        help="folder for the app's state (SRGAN_APP_DIR; default var/ in the checkout, or in "
                        "the current folder for an installed package)")
    parser.add_argument("--admin-token", default=env.get("SRGAN_ADMIN_TOKEN"),
                        help="token that opens the results tab (SRGAN_ADMIN_TOKEN)")
    parser.add_argument("--concurrency", type=int, default=env.get("SRGAN_CONCURRENCY", 1),
                        help="requests processed at once per event (SRGAN_CONCURRENCY; default 1)")
    parser.add_argument("--study", default=env.get("SURVEY_STUDY", "examples"),
                        help="the study the MOS tab serves (SURVEY_STUDY; default examples, made on first start)")
    parser.add_argument("--max-upload-mb", type=float,
                        default=env.get("SRGAN_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB),
                        help=f"refuse larger uploads (SRGAN_MAX_UPLOAD_MB; default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--local-demo", action="store_true", default=_env_flag("SRGAN_LOCAL_DEMO"),
                        help="without an admin token, make a random one and print it (SRGAN_LOCAL_DEMO; "
                        "loopback host only)")
    add_limit_arguments(parser)  # --join-key, --joins-per-hour, --min-rating-ms
    args = parser.parse_args(argv)
    study_limits = limit_options(parser, args)
    token = args.admin_token or None
    if token is not None and len(token) < MIN_ADMIN_TOKEN:
        parser.error(f"--admin-token / SRGAN_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters "
                     "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if args.local_demo:
        if args.share or not _is_loopback(args.host):
            parser.error("--local-demo is for this machine only: use a loopback --host (127.0.0.1) and no --share")
        token = token or secrets.token_urlsafe(24)
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    if args.max_pixels is not None and args.max_pixels <= 0:
        parser.error("--max-pixels must be positive")
    if not 0 <= args.port <= 65535:  # 0: any free port
        parser.error(f"--port {args.port}: must be from 0 to 65535")
    try:
        from survey.study.store import StudyError, check_study_name

        check_study_name(args.study)
    except StudyError as error:
        parser.error(str(error))
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA GPU is available here; use --device cpu")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    try:
        resolve_precision(args.precision, parse_device(args.device))
    except ValueError as error:
        parser.error(str(error))
    return AppConfig(
        host=args.host,
        port=args.port,
        share=args.share,
        device=args.device,
        precision=args.precision,
        max_pixels=args.max_pixels,
        db_url=args.db_url,
        app_dir=(args.app_dir or default_app_dir()).resolve(),
        admin_token=token,
        concurrency=args.concurrency,
        study=args.study,
        max_upload_mb=args.max_upload_mb,
        local_demo=args.local_demo and token != args.admin_token,
        study_limits=study_limits,
    )


def _check_study_exists(config: AppConfig) -> None:
    """A named study must have been prepared; only "examples" is made on first start."""
    from survey.study import store
    from survey.study.db import get_engine
    from survey.study.prepare import DEFAULT_STUDY

    if config.study != DEFAULT_STUDY and config.study not in store.list_studies(get_engine(config.study_db_url)):
        sys.exit(f"error: the study database has no study {config.study!r}; make it first with "
                 f"`python -m survey.prepare --name {config.study} --hr-dir FOLDER` (same --db and --app-dir)")


def main(argv: list[str] | None = None) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from survey.study.cleanup import CachePolicy
    from survey.study.db import DatabaseCheckError, SchemaVersionError, check_database, display_url

    config = parse_args(argv)
    try:
        cache_policy = CachePolicy.from_env()  # SRGAN_CACHE_MB, SRGAN_CACHE_MINUTES
    except ValueError as error:
        sys.exit(f"error: {error}")
    try:
        # Before anything is written: a missing, emptied or damaged database is refused, not replaced.
        check_database(config.study_db_url, config.app_dir)
        _check_study_exists(config)
        app = build_app(config)
    except (DatabaseCheckError, SchemaVersionError) as error:
        sys.exit(f"error: {error}")
    except SQLAlchemyError as error:  # unreachable server, bad URL: one line, not a traceback
        sys.exit(f"error: the study database {display_url(config.study_db_url)} failed: {error}")
    for line in missing_weights_warnings():
        print(line, file=sys.stderr, flush=True)
    if config.study_limits.get("join_key"):
        print(f"Invitation-only study: send new raters http://{config.host}:{config.port}/?study&key=<the join key>",
              flush=True)
    precision = resolve_precision(config.precision, parse_device(config.device))
    print(f"Networks run on {config.device} in {precision}" + (" (--precision fp32 for full precision)"
          if precision != "fp32" else ""), flush=True)
    launch(app, config, cache_policy=cache_policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
