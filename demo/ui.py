"""The comparison tab: bicubic vs SRResNet vs SRGAN side by side.

The event handlers only turn `demo.compare` results into component values; the
work is in `demo.compare`. Named API endpoints: /compare (the whole comparison)
and /blend (re-run SRGAN with another α on the last image).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from demo.compare import (
    LABELS,
    METRIC_HEADERS,
    MODES,
    RESULT_METHODS,
    SCALE,
    Comparison,
    CompareError,
    choose_mode,
    compare,
    hr_caption,
    metrics_rows,
    new_run_dir,
    panel_caption,
    point_to_fraction,
    rerun_srgan,
    save_pngs,
    zoom_crops,
)
from demo.examples import write_examples
from srgan.images import ImageError, default_max_pixels, load_image
from srgan.inference import Upscaler
from srgan.weights import METHOD_WEIGHTS, WEIGHTS, describe, is_available


# A reused view older than this has its time refreshed (the cache keeps files by age).
REFRESH_AFTER_S = 60
# Pixel-level views stay blocky when the browser scales them (pass to launch(css=...)).
CSS = "#demo-zoom img { image-rendering: pixelated; }"


def _uploaded_file(value: Any) -> str | bytes | None:
    """The image input's raw payload as the uploaded file's path (or bytes), not decoded.

    The events that read the image run with preprocess=False: gr.Image's own
    preprocessing opens the file with PIL before our function runs, so a non-image
    would fail inside Gradio with no useful message. This way every decode goes
    through srgan.images.load_image, which explains refusals. (Gradio still checks
    that the path is an upload in its cache before the function sees it.) Direct
    calls may pass a path or bytes.
    """
    if not isinstance(value, dict):
        return value
    url = value.get("url") or ""
    if url.startswith("data:"):
        _, _, data = url.partition(",")
        return base64.b64decode(data)
    return value.get("path")


# zlib level of the PNGs the tab writes (lossless at any level): PIL's default, 6, took 0.31 s for
# a 1024x1024 output and made encoding most of a comparison's time; 1 takes 0.08 s for a file 13%
# larger (1.7 MB against 1.5 MB).
PNG_COMPRESS_LEVEL = 1


def png_file(image: Image.Image, folder: Path, name: str) -> str:
    """`image` as a PNG named `name` under `folder`, by content; a file is written once, whole.

    The panels, the wipe and the zoom get paths from here rather than PIL images because
    Gradio writes a PIL output in place at a path named by its content's hash, every
    time: when the same pixels go out again (the wipe's dropdown events re-send two
    panels; a comparison is repeated) the file is truncated and rewritten while the
    browser may still be downloading it, which showed as a Content-Length mismatch and
    a broken panel. Here an existing file is reused untouched and a new one appears by
    rename, complete. Under Gradio's cache folder, Gradio serves it without a copy.
    Files are keyed by the pixels, so the same image under another name (a panel shown
    again in the wipe, a download) copies the encoded bytes instead of encoding again.
    """
    key = hashlib.sha256(f"{image.mode} {image.size}".encode() + image.tobytes()).hexdigest()[:32]
    path = folder / key / f"{name}.png"
    if path.exists():
        try:
            # Handed out again long after it was written: young again for the cache's pruning by
            # age (survey.cleanup). Not on every reuse: a served file's time stays as written.
            if time.time() - path.stat().st_mtime > REFRESH_AFTER_S:
                os.utime(path)
            return str(path)
        except FileNotFoundError:  # pruned just now: write it again
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    twin = next((p for p in path.parent.glob("*.png") if not p.name.startswith(".")), None)
    if twin is not None:
        data = twin.read_bytes()
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        data = buffer.getvalue()
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return str(path)


def weights_markdown() -> str:
    """How each network was made; before any comparison, which panels stay empty and why."""
    lines = [f"- {describe(name)}" for name in WEIGHTS]
    missing = [LABELS[method] for method, name in METHOD_WEIGHTS.items() if not is_available(name)]
    if missing:
        lines.append(
            f"\n⚠️ **The {' and '.join(missing)} panel{'s' if len(missing) > 1 else ''} will stay empty**: "
            "weights missing (above: the file and the command that makes it). α is off: it blends both "
            "networks. Bicubic works."
        )
    return "\n".join(lines)


def alpha_slider_args() -> dict[str, Any]:
    """The α slider's interactivity and help: α blends SRResNet and SRGAN, so it needs both."""
    missing = [WEIGHTS[name].filename for name in METHOD_WEIGHTS.values() if not is_available(name)]
    if missing:
        return {"interactive": False,
                "info": f"Off: blending needs both networks' weights, and {' and '.join(missing)} "
                        f"{'are' if len(missing) > 1 else 'is'} missing."}
    return {"interactive": True,
            "info": "0 = SRResNet (MSE), 1 = SRGAN (perceptual); in between the two networks' "
                    "weights are blended. Re-runs SRGAN on release."}


def _pick_pair(labels: list[str]) -> tuple[str, str]:
    """The slider's default pair: bicubic against the most perceptual result there is."""
    first = labels[0]
    for preferred in reversed(labels):
        if preferred != first and not preferred.startswith(LABELS["hr"]):
            return first, preferred
    return first, labels[-1]


class DemoTab:
    """Components and handlers of the comparison tab (built inside the caller's gr.Tab)."""

    def __init__(self, *, upscaler: Upscaler, max_pixels: int | None, app_dir: Path) -> None:
        self.upscaler = upscaler
        self.max_pixels = max_pixels if max_pixels is not None else default_max_pixels()
        self.outputs_dir = app_dir / "demo_outputs"
        self.views_dir = Path(gr.utils.get_upload_folder()) / "demo_views"
        self.example_paths = write_examples(app_dir / "examples")
        self.output_count = 0  # set by build()

    # ---------------------------------------------------------------- handlers

    def run_compare(self, source: Any, mode: str, alpha: float, progress=gr.Progress()) -> tuple:
        source = _uploaded_file(source)
        if source is None:
            raise gr.Error("Upload an image, paste one, or pick an example first.", print_exception=False)
        try:
            comparison = compare(
                source,
                upscaler=self.upscaler,
                mode=mode,
                alpha=alpha,
                max_pixels=self.max_pixels,
                progress=lambda fraction, message: progress(fraction, desc=message),
            )
        except (ImageError, CompareError) as error:
            raise gr.Error(str(error), title="Can't use this image", print_exception=False) from None
        return self._render(comparison)

    def _refusal(self, source: Any, mode: str) -> str | None:
        """Why the input can't be used, or None when it can (a quick decode, before any model runs)."""
        source = _uploaded_file(source)
        if source is None:
            return "Upload an image, paste one, or pick an example first."
        try:
            image = load_image(source, max_pixels=self.max_pixels)
            choose_mode(image.size, mode, max_pixels=self.max_pixels)
        except (ImageError, CompareError) as error:
            return str(error)
        return None

    def check_input(self, source: Any, mode: str) -> str:
        refusal = self._refusal(source, mode)
        if refusal is not None:
            raise gr.Error(refusal, title="Can't use this image", print_exception=False)
        return "Working…"

    def show_refusal(self, source: Any, mode: str) -> tuple:
        """After a refusal: the message in the status line, and no stale results beside it."""
        message = self._refusal(source, mode) or "Something went wrong; please try again."
        empty_panels = [None, ""] * (len(RESULT_METHODS) + 1)
        no_choice = gr.Dropdown(choices=[], value=None)
        return (None, f"⚠️ **Can't use this image:** {message}", *empty_panels, [], no_choice, no_choice, None, [], None)

    def run_blend(self, comparison: Comparison | None, alpha: float, progress=gr.Progress()) -> tuple:
        if comparison is None:  # nothing compared yet: α applies to the next comparison
            return (gr.skip(),) * self.output_count
        try:
            comparison = rerun_srgan(
                comparison,
                upscaler=self.upscaler,
                alpha=alpha,
                progress=lambda fraction, message: progress(fraction, desc=message),
            )
        except CompareError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return self._render(comparison)

    def _render(self, comparison: Comparison) -> tuple:
        lr_w, lr_h = comparison.lr.size
        status = f"{comparison.mode_reason}  \nNetwork input {lr_w}x{lr_h} → output {SCALE * lr_w}x{SCALE * lr_h}."
        panels: list[Any] = []
        for method in RESULT_METHODS:
            result = comparison.results[method]
            panels += [self._view(result.image, comparison, f"{method}_x{SCALE}"), panel_caption(comparison, method)]
        panels += [self._view(comparison.hr, comparison, "hr"), hr_caption(comparison)]

        labels = list(comparison.labelled_images())
        left, right = _pick_pair(labels)
        files = [str(p) for p in save_pngs(comparison, new_run_dir(self.outputs_dir), encode=self._png_bytes)]
        return (
            comparison,
            status,
            *panels,
            metrics_rows(comparison),
            gr.Dropdown(choices=labels, value=left),
            gr.Dropdown(choices=labels, value=right),
            self._slider_value(comparison, left, right),
            self._zoom(comparison, 0.5, 0.5, 48),
            files,
        )

    def _png_bytes(self, image: Image.Image) -> bytes:
        """A download's bytes: those already written for the panel of the same pixels, not encoded again."""
        return Path(png_file(image, self.views_dir, "download")).read_bytes()

    def _view(self, image: Image.Image | None, comparison: Comparison, what: str) -> str | None:
        """A shown image as a file the browser can fetch while any other event runs (see png_file)."""
        return None if image is None else png_file(image, self.views_dir, f"{comparison.name}_{what}")

    def _slider_value(self, comparison: Comparison, left: str, right: str) -> tuple[str, str] | None:
        images = comparison.labelled_images()
        if left not in images or right not in images:
            return None
        return self._view(images[left], comparison, "wipe"), self._view(images[right], comparison, "wipe")

    def _zoom(self, comparison: Comparison, x: float, y: float, crop: float) -> list[tuple[str, str]]:
        crops = zoom_crops(comparison, center_x=x, center_y=y, crop=int(crop))
        return [(self._view(image, comparison, "zoom"), label) for image, label in crops]

    def update_slider(self, comparison: Comparison | None, left: str, right: str):
        if comparison is None:
            return None
        return self._slider_value(comparison, left, right)

    def update_zoom(self, comparison: Comparison | None, x_percent: float, y_percent: float, crop: float):
        if comparison is None:
            return []
        return self._zoom(comparison, x_percent / 100, y_percent / 100, crop)

    def zoom_at_click(self, comparison: Comparison | None, crop: float, event: gr.SelectData):
        if comparison is None or event.index is None:
            return gr.skip(), gr.skip(), gr.skip()
        size = (comparison.lr.width * SCALE, comparison.lr.height * SCALE)
        x, y = point_to_fraction(event.index, size)
        return round(100 * x, 1), round(100 * y, 1), self._zoom(comparison, x, y, crop)

    # ---------------------------------------------------------------- layout

    def build(self) -> None:
        gr.Markdown(
            "Upload, paste or pick a photo. **Large images** (both sides ≥ 256 px) are treated as "
            "**HR**: downscaled 4x with MATLAB's bicubic, super-resolved, and scored against the "
            "original (PSNR / SSIM on Y, NIQE). **Small images** are treated as **LR** and "
            "upscaled 4x (NIQE only). Change it with *Mode*. Lower NIQE = more natural."
        )
        gr.Markdown(weights_markdown(), elem_id="demo-weights")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                source = gr.Image(
                    type="filepath", sources=["upload", "clipboard"], label="Your image", height=300,
                    elem_id="demo-input",
                )
            with gr.Column(scale=1):
                mode = gr.Radio(list(MODES), value="Auto", label="Mode", elem_id="demo-mode")
                alpha = gr.Slider(
                    0, 1, value=1.0, step=0.05, label="Perception ↔ distortion: α", elem_id="demo-alpha",
                    **alpha_slider_args(),
                )
                run = gr.Button("Compare", variant="primary", elem_id="demo-run")
                status = gr.Markdown(label="mode", elem_id="demo-status")
        gr.Examples(examples=[[str(p)] for p in self.example_paths], inputs=[source], label="Examples",
                    elem_id="demo-examples")

        panel_components: list[gr.components.Component] = []
        with gr.Row(equal_height=True):
            for method in RESULT_METHODS:
                with gr.Column(min_width=200):
                    panel_components.append(
                        gr.Image(label=LABELS[method], type="pil", format="png", interactive=False,
                                 elem_id=f"demo-{method}")
                    )
                    panel_components.append(gr.Markdown(label=f"{method} scores", elem_id=f"demo-{method}-caption"))
            with gr.Column(min_width=200):
                hr_image = gr.Image(label=LABELS["hr"], type="pil", format="png", interactive=False,
                                    elem_id="demo-hr")
                panel_components += [hr_image, gr.Markdown(label="hr notes", elem_id="demo-hr-caption")]
        metrics = gr.Dataframe(headers=METRIC_HEADERS, label="Scores", interactive=False, elem_id="demo-metrics")

        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("**Wipe** between any two results.")
                left = gr.Dropdown(label="Left", choices=[], elem_id="demo-left")
                right = gr.Dropdown(label="Right", choices=[], elem_id="demo-right")
                files = gr.File(label="Download results (PNG)", file_count="multiple", interactive=False,
                                elem_id="demo-files")
            with gr.Column(scale=3):
                slider = gr.ImageSlider(label="Wipe", type="pil", format="png", elem_id="demo-slider")

        gr.Markdown("**Zoom**: click on any result, or move the sliders; every method's crop is shown at pixel level.")
        with gr.Row():
            zoom_x = gr.Slider(0, 100, value=50, step=0.5, label="x (%)", elem_id="demo-zoom-x")
            zoom_y = gr.Slider(0, 100, value=50, step=0.5, label="y (%)", elem_id="demo-zoom-y")
            zoom_crop = gr.Slider(16, 128, value=48, step=8, label="Crop (output px)")
        zoom = gr.Gallery(label="Zoom (nearest neighbour)", columns=5, height=320, object_fit="contain", format="png",
                          elem_id="demo-zoom")

        outputs = [state, status, *panel_components, metrics, left, right, slider, zoom, files]
        self.output_count = len(outputs)
        # The quick check shows refusals as one message instead of an error on every panel.
        # preprocess=False: these handlers decode the upload themselves (see _uploaded_file).
        checked = run.click(self.check_input, inputs=[source, mode], outputs=status, show_progress="hidden",
                            api_visibility="private", preprocess=False)
        checked.success(self.run_compare, inputs=[source, mode, alpha], outputs=outputs, api_name="compare",
                        preprocess=False)
        checked.failure(self.show_refusal, inputs=[source, mode], outputs=outputs, show_progress="hidden",
                        api_visibility="private", preprocess=False)
        alpha.release(self.run_blend, inputs=[state, alpha], outputs=outputs, api_name="blend")
        for dropdown in (left, right):
            dropdown.change(self.update_slider, inputs=[state, left, right], outputs=slider, api_visibility="private")
        for control in (zoom_x, zoom_y, zoom_crop):
            control.release(self.update_zoom, inputs=[state, zoom_x, zoom_y, zoom_crop], outputs=zoom,
                            api_visibility="private")
        for image in panel_components[0::2]:
            image.select(self.zoom_at_click, inputs=[state, zoom_crop], outputs=[zoom_x, zoom_y, zoom],
                         api_visibility="private")


def build_demo_tab(*, upscaler: Upscaler, max_pixels: int | None, app_dir: Path) -> DemoTab:
    """Build the comparison tab's components in the current Blocks context."""
    tab = DemoTab(upscaler=upscaler, max_pixels=max_pixels, app_dir=app_dir)
    tab.build()
    return tab
