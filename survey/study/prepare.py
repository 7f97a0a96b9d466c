"""Build a MOS study: stimuli on disk and registered in the database.

    python -m survey.prepare --name bsd100 --hr-dir ../shared/data/benchmarks/BSD100/HR
    python -m survey.prepare --name baseline --from-outputs FOLDER   # FOLDER/<method>/<image>.png

From HR photos: each is cropped to a multiple of 4, reduced 4x with our MATLAB-compatible
bicubic (``srgan.inference.downscale``) and upscaled by each method; ``hr`` is the cropped
original. Calibration examples come from separate photographs that are never rated
(``--calibration-dir``, else scikit-image's; see ``add_calibration_images``). Stimuli are
PNGs with random names (the name never reveals the method) in ``<app dir>/studies/<study>/``,
every one in sRGB with no metadata, and stored uncompressed so that neither their bytes nor
their size tell the method (see ``stimulus_png``). Methods without trained weights are skipped
with a note. Running again adds only what is missing (stimuli made by an older version are kept
as they are).
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage
from PIL import ImageCms

from survey.ratings import PAPER_ORDER, REFERENCE
from survey.study import protocol, store
from survey.study.db import default_app_dir, default_db_url, get_engine

DEFAULT_METHODS = PAPER_ORDER  # the paper's BSD100 study
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_STUDY = "examples"
# scikit-image's bundled photographs and a 256x256 region of each (top, left): small stimuli.
EXAMPLE_PHOTOS = {"astronaut": (40, 150), "coffee": (72, 172), "chelsea": (22, 98), "rocket": (90, 190)}
EXAMPLE_SIZE = 256
# Calibration-only images when no --calibration-dir is given: scikit-image photographs (name:
# loader, top, left of a 256x256 region), first those in no study made here by default, then
# the example study's photos, which a BSD100 study does not rate. A photo a study rates is
# never one of its calibration images.
CALIBRATION_PHOTOS = {
    "motorcycle": ("stereo_motorcycle", 120, 300),
    "cameraman": ("camera", 40, 160),
    **{name: (name, top, left) for name, (top, left) in EXAMPLE_PHOTOS.items()},
}
CALIBRATION_PREFIX = "calibration-"  # calibration images' names in the database


@dataclass
class PrepareReport:
    study: str
    added: int = 0
    kept: int = 0
    calibration_added: int = 0  # stimuli of calibration-only images, not in `added`
    precision: str | None = None  # the networks' precision when they ran (prepare_from_hr)
    notes: list[str] = field(default_factory=list)


def study_dir(app_dir: Path, study: str) -> Path:
    return Path(app_dir) / "studies" / store.check_study_name(study)


def stimulus_path(app_dir: Path, study: str, file_name: str) -> Path:
    """The file of a stimulus, only ever inside its study folder (no traversal via names)."""
    if not isinstance(file_name, str) or not file_name.endswith(".png") or not file_name[:-4].isalnum():
        raise store.StudyError("Invalid stimulus file name.")
    folder = study_dir(app_dir, study).resolve()
    path = (folder / file_name).resolve()
    if path.parent != folder:
        raise store.StudyError("Invalid stimulus file name.")
    return path


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(image: PILImage.Image) -> PILImage.Image:
    """Plain RGB pixels in sRGB, with no metadata: an embedded colour profile is applied (a
    browser would colour-manage a tagged stimulus unlike the untagged ones, and the profile
    alone would tell which stimulus is the original). Raises ImageError for a profile that
    cannot be applied."""
    from srgan.images import ImageError

    icc = image.info.get("icc_profile")
    rgb = image.convert("RGB")
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            raise ImageError(
                "its colour profile cannot be read: convert it to sRGB first, then run this again"
            ) from None
        space = profile.profile.xcolor_space.strip()
        if space not in ("RGB", "GRAY"):
            raise ImageError(
                f"its colour profile is for {space} pixels, not RGB: convert it to sRGB first "
                f"(e.g. in an image editor), then run this again"
            )
        # A grey photograph's pixels were decoded to RGB with its profile kept: apply it to grey.
        source = rgb.convert("L") if space == "GRAY" else rgb
        try:
            rgb = ImageCms.profileToProfile(source, profile, SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as error:
            raise ImageError(
                f"its colour profile cannot be applied ({error}): convert it to sRGB first, then run this again"
            ) from None
    return PILImage.frombytes("RGB", rgb.size, rgb.tobytes())  # a fresh image: nothing in .info


def stimulus_png(image: PILImage.Image) -> bytes:
    """The image as a lossless 8-bit RGB PNG whose length depends on its width and height
    alone: in sRGB with no metadata (``to_srgb``: no profile, gamma, text, time or
    transparency chunk; only IHDR, IDAT and IEND) and zlib level 0, whose stored blocks hold
    the pixel rows as they are.

    A compressed PNG's size is how compressible the picture is, and that told the methods apart
    (nearest-neighbour blocks compress best, the HR photograph least); padding a compressed
    file to a common length would not hide it, as the IDAT chunks' own lengths still tell.
    The cost is size: 3 bytes a pixel (197 KB for 256x256, 461 KB for 480x320).
    """
    buffer = io.BytesIO()
    to_srgb(image).save(buffer, format="PNG", compress_level=0)  # PNG also takes chunks from .info
    return buffer.getvalue()


def _save_png(image: PILImage.Image, folder: Path) -> str:
    """Write atomically under a fresh random name; return the name."""
    folder.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(16) + ".png"
    tmp = folder / (name + ".tmp")
    tmp.write_bytes(stimulus_png(image))
    os.replace(tmp, folder / name)
    return name


def _needs_file(engine, app_dir: Path, study: str, image: str, method: str) -> bool:
    name = store.stimulus_file_name(engine, study, image, method)
    return name is None or not stimulus_path(app_dir, study, name).is_file()


def _add(
    engine, app_dir: Path, study: str, image_name: str, method: str, picture: PILImage.Image, *, calibration: bool = False
) -> None:
    file_name = _save_png(picture, study_dir(app_dir, study))  # in sRGB, untagged: see stimulus_png
    store.register_stimulus(
        engine, study, image=image_name, method=method, file_name=file_name, width=picture.width, height=picture.height,
        calibration=calibration,
    )


def _check_methods(methods: list[str]) -> list[str]:
    from srgan.inference import METHODS

    known = set(METHODS) | {REFERENCE}
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise store.StudyError(f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}.")
    return list(dict.fromkeys(methods))


def prepare_from_hr(
    *,
    db_url: str,
    app_dir: Path,
    study: str,
    hr_images: dict[str, PILImage.Image | Path],
    methods: list[str] | tuple[str, ...] = DEFAULT_METHODS,
    per_rater: int | None = None,
    repeats: int = 2,
    calibration_images: int = 2,
    calibration_dir: Path | None = None,
    precision: str = "auto",
) -> PrepareReport:
    """Add every (image, method) not yet in the study; ``hr_images`` maps names to images/files.

    The networks run in ``precision`` (``srgan.inference.Upscaler``'s: "auto" is bf16 on a CPU
    with bf16 in hardware, within 0.01 dB of fp32). Then the calibration-only images (see
    ``add_calibration_images``).
    """
    from srgan import weights
    from srgan.images import ImageError, crop_to_multiple, load_image
    from srgan.inference import Upscaler, downscale

    methods = _check_methods(list(methods))
    engine = get_engine(db_url)
    _check_calibration_dir(engine, study, calibration_dir, set(hr_images))
    store.ensure_study(engine, study, per_rater=per_rater, repeats=repeats, calibration_images=calibration_images)
    report = PrepareReport(study)
    upscaler = Upscaler(precision=precision)
    report.precision = upscaler.precision
    available = set(upscaler.available_methods()) | {REFERENCE}
    for method in methods:
        if method not in available:
            report.notes.append(
                f"Skipped method {method!r}: its trained weights are missing "
                f"({weights.weights_path(method)}); train them, then run this again to add it."
            )
    usable = [m for m in methods if m in available]
    for image_name, source in sorted(hr_images.items()):
        missing = [m for m in usable if _needs_file(engine, app_dir, study, image_name, m)]
        report.kept += len(usable) - len(missing)
        if not missing:
            continue
        try:
            hr = source if isinstance(source, PILImage.Image) else load_image(source)
            hr = to_srgb(hr)  # before the downscale: every method starts from the sRGB pixels
        except ImageError as error:
            report.notes.append(f"Skipped image {image_name!r}: {error}")
            continue
        hr = crop_to_multiple(hr, 4)
        lr = downscale(hr)
        for method in missing:
            picture = hr if method == REFERENCE else upscaler.upscale(lr, method)
            _add(engine, app_dir, study, image_name, method, picture)
            report.added += 1
    add_calibration_images(engine, app_dir, study, calibration_dir=calibration_dir, report=report)
    return report


def calibration_sources(calibration_dir: Path | None) -> dict[str, Path | Callable[[], PILImage.Image]]:
    """Candidate calibration photographs by name: the folder's image files, else loaders of
    CALIBRATION_PHOTOS (loaded only when used)."""
    if calibration_dir is not None:
        return hr_folder_images(calibration_dir)
    return {name: (lambda spec=spec: skimage_region(*spec)) for name, spec in CALIBRATION_PHOTOS.items()}


def _check_calibration_dir(engine, study: str, calibration_dir: Path | None, rated: set[str]) -> None:
    """Refuse a calibration folder holding images the study rates (``rated`` or already in it)."""
    if calibration_dir is None:
        return
    if study in store.list_studies(engine):
        rated = rated | set(store.image_names(engine, study, calibration=False))
    clash = sorted(rated & set(hr_folder_images(calibration_dir)))
    if clash:
        raise store.StudyError(
            f"{calibration_dir} has images the study rates ({', '.join(clash[:5])}): calibration "
            f"images must be other photographs (the paper used BSD300 training images for BSD100)."
        )


def add_calibration_images(
    engine, app_dir: Path, study: str, *, calibration_dir: Path | None, report: PrepareReport
) -> None:
    """Give the study its calibration-only images, up to its ``calibration_images`` option.

    Each is an HR photograph shown twice before any rating: its nearest-neighbour 4x
    upscale (from the same MATLAB-bicubic LR as the stimuli) as an example of a 1, and
    itself as an example of a 5. They are never rated, and never a rated image: the paper
    calibrated on BSD300 training images, outside the BSD100 it tested.
    """
    from srgan.images import ImageError, crop_to_multiple, load_image
    from srgan.inference import Upscaler, downscale

    wanted = store.study_summary(engine, study)["calibration_images"]
    rated = set(store.image_names(engine, study, calibration=False))
    have = store.image_names(engine, study, calibration=True)
    sources = calibration_sources(calibration_dir)
    _check_calibration_dir(engine, study, calibration_dir, rated)
    anchors = (protocol.CALIBRATION_LOW, protocol.CALIBRATION_HIGH)

    def missing(image_name: str) -> list[str]:
        return [m for m in anchors if _needs_file(engine, app_dir, study, image_name, m)]

    done = sum(not missing(image_name) for image_name in have)
    upscaler = Upscaler()
    for name, source in sources.items():
        if done >= wanted:
            break
        image_name = CALIBRATION_PREFIX + name
        todo = missing(image_name)
        if name in rated or not todo or (image_name not in have and image_name in rated):
            continue
        try:
            hr = to_srgb(load_image(source) if isinstance(source, Path) else source())
        except ImageError as error:
            report.notes.append(f"Skipped calibration image {name!r}: {error}")
            continue
        hr = crop_to_multiple(hr, 4)
        pictures = {protocol.CALIBRATION_LOW: upscaler.upscale(downscale(hr), protocol.CALIBRATION_LOW), protocol.CALIBRATION_HIGH: hr}
        for method in todo:
            _add(engine, app_dir, study, image_name, method, pictures[method], calibration=True)
            report.calibration_added += 1
        done += 1
    if done < wanted:
        where = str(calibration_dir) if calibration_dir is not None else "the built-in photographs"
        report.notes.append(
            f"Only {done} of {wanted} calibration images: {where} had no more photographs that the study "
            f"does not rate. Give more with --calibration-dir DIR."
        )


def hr_folder_images(folder: Path) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise store.StudyError(f"HR folder not found: {folder}")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if not files:
        raise store.StudyError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return files


def prepare_from_outputs(
    *,
    db_url: str,
    app_dir: Path,
    study: str,
    outputs_dir: Path,
    methods: list[str] | None = None,
    per_rater: int | None = None,
    repeats: int = 2,
    calibration_images: int = 2,
    calibration_dir: Path | None = None,
) -> PrepareReport:
    """A study from pre-made outputs: ``outputs_dir/<method>/<image>.png`` (any method name).

    Then the calibration-only images (see ``add_calibration_images``).
    """
    from srgan.images import ImageError, load_image

    outputs_dir = Path(outputs_dir)
    if not outputs_dir.is_dir():
        raise store.StudyError(f"Outputs folder not found: {outputs_dir}")
    folders = {p.name: p for p in sorted(outputs_dir.iterdir()) if p.is_dir()}
    wanted = methods if methods else list(folders)
    for name in wanted:
        try:
            store.check_study_name(name)  # method names: the same safe alphabet
        except store.StudyError:
            raise store.StudyError(f"Invalid method name {name!r}: use up to 64 letters, digits, '.', '-' or '_'.") from None
    engine = get_engine(db_url)
    stems = {p.stem for name in wanted if name in folders for p in folders[name].iterdir()}
    _check_calibration_dir(engine, study, calibration_dir, stems)
    store.ensure_study(engine, study, per_rater=per_rater, repeats=repeats, calibration_images=calibration_images)
    report = PrepareReport(study)
    for method in wanted:
        if method not in folders:
            report.notes.append(f"Skipped method {method!r}: no folder {outputs_dir / method}")
            continue
        for path in sorted(folders[method].iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not _needs_file(engine, app_dir, study, path.stem, method):
                report.kept += 1
                continue
            try:
                picture = to_srgb(load_image(path))
            except ImageError as error:
                report.notes.append(f"Skipped {path}: {error}")
                continue
            _add(engine, app_dir, study, path.stem, method, picture)
            report.added += 1
    add_calibration_images(engine, app_dir, study, calibration_dir=calibration_dir, report=report)
    return report


def skimage_region(loader: str, top: int, left: int) -> PILImage.Image:
    """A 256x256 region (top, left) of one of scikit-image's bundled photographs, as RGB."""
    from skimage import data

    array = getattr(data, loader)()
    array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle: (left, right, disparity)
    return PILImage.fromarray(array[top : top + EXAMPLE_SIZE, left : left + EXAMPLE_SIZE]).convert("RGB")


def example_photos() -> dict[str, PILImage.Image]:
    """256x256 regions of scikit-image's bundled sample photographs."""
    return {name: skimage_region(name, top, left) for name, (top, left) in EXAMPLE_PHOTOS.items()}


def ensure_default_study(*, db_url: str, app_dir: Path) -> str:
    """Create (once; later calls only add newly available methods) the "examples" study."""
    from srgan.inference import Upscaler

    engine = get_engine(db_url)
    methods = [m for m in DEFAULT_METHODS if m == REFERENCE or m in Upscaler().available_methods()]
    complete = (
        DEFAULT_STUDY in store.list_studies(engine)
        and not any(
            _needs_file(engine, app_dir, DEFAULT_STUDY, image, method) for image in EXAMPLE_PHOTOS for method in methods
        )
        and store.study_summary(engine, DEFAULT_STUDY)["calibration_note"] is None
    )
    if not complete:
        prepare_from_hr(db_url=db_url, app_dir=app_dir, study=DEFAULT_STUDY, hr_images=example_photos(), methods=methods)
    return DEFAULT_STUDY


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m survey.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="study name (letters, digits, . - _)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hr-dir", type=Path, help="folder of HR images")
    source.add_argument("--from-outputs", type=Path, help="folder with <method>/<image>.png")
    parser.add_argument("--methods", help=f"comma-separated (default {','.join(DEFAULT_METHODS)}; "
                        "with --from-outputs: every subfolder)")
    parser.add_argument("--db", help="SQLAlchemy URL (default: env SURVEY_DB_URL or <app dir>/study.sqlite)")
    parser.add_argument("--app-dir", type=Path, default=None, help="app state folder (default: env SRGAN_APP_DIR or var/)")
    parser.add_argument("--per-rater", type=int, default=None,
                        help="balanced subset of this many stimuli per rater (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="hidden test-retest duplicates per rater (default 2)")
    parser.add_argument("--calibration-images", type=int, default=None,
                        help="images shown first as examples of a 1 and a 5, never rated (default 2)")
    parser.add_argument("--calibration-dir", type=Path, default=None,
                        help="photographs for those examples, none of them rated (default: scikit-image's)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="the networks' precision with --hr-dir (default auto: bf16 on a CPU with bf16 in "
                             "hardware, within 0.01 dB of fp32; else fp32)")
    return parser.parse_args(argv)


def _update_options(db_url: str, args: argparse.Namespace) -> None:
    """Options given for an existing study change it (raters who started keep their plan)."""
    engine = get_engine(db_url)
    if args.name not in store.list_studies(engine):
        return
    if args.per_rater is None and args.repeats is None and args.calibration_images is None:
        return
    current = store.study_summary(engine, args.name)
    store.set_study_options(
        engine, args.name,
        per_rater=args.per_rater if args.per_rater is not None else current["per_rater"],
        repeats=args.repeats if args.repeats is not None else current["repeats"],
        calibration_images=args.calibration_images if args.calibration_images is not None else current["calibration_images"],
    )
    print("note: study options updated; raters who already started keep their sequence")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    app_dir = args.app_dir or default_app_dir()
    db_url = args.db or default_db_url(app_dir)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    options = dict(
        per_rater=args.per_rater,
        repeats=2 if args.repeats is None else args.repeats,
        calibration_images=2 if args.calibration_images is None else args.calibration_images,
    )
    try:
        if (args.per_rater is not None and args.per_rater <= 0) or options["repeats"] < 0 or options["calibration_images"] < 0:
            raise store.StudyError("--per-rater must be positive; --repeats and --calibration-images not negative")
        _update_options(db_url, args)
        if args.hr_dir is not None:
            report = prepare_from_hr(
                db_url=db_url, app_dir=app_dir, study=args.name, hr_images=hr_folder_images(args.hr_dir),
                methods=methods or DEFAULT_METHODS, calibration_dir=args.calibration_dir,
                precision=args.precision, **options,
            )
        else:
            report = prepare_from_outputs(
                db_url=db_url, app_dir=app_dir, study=args.name, outputs_dir=args.from_outputs, methods=methods,
                calibration_dir=args.calibration_dir, **options,
            )
    except store.StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}")
    summary = store.study_summary(get_engine(db_url), report.study)
    print(
        f"study {summary['study']!r}: {report.added} stimuli added, {report.kept} already there; "
        f"{summary['images']} images x methods {', '.join(summary['methods'])} = {summary['stimuli']} stimuli "
        f"in {study_dir(app_dir, report.study)}"
        + (f" (networks in {report.precision})" if report.added and report.precision else "")
    )
    calibration = store.image_names(get_engine(db_url), report.study, calibration=True)
    print(f"calibration: {summary['calibration_images_ready']} images ({', '.join(calibration) or 'none'}), "
          f"shown as examples of a 1 and a 5, never rated")
    if summary["calibration_note"]:
        print(f"note: {summary['calibration_note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
