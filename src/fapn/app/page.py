"""The Gradio page of ``fapn app``: upload an image (and optionally its ground truth), see every model's labels
side by side, where they disagree, their scores and latency, and each FAM's offsets and mask.

The page's one event is also the API endpoint ``/segment``: it takes the image file and an optional ground-truth
file and returns, in order, the side-by-side picture, the label PNGs (one per model, class indices), the
disagreement map, the scores table (Markdown), the alignment figures (a gallery), their summary (Markdown) and
the notes (Markdown). A bad upload is answered with an error naming the problem; the server keeps running.

Example:
    >>> from gradio_client import Client, handle_file  # doctest: +SKIP
    >>> client = Client("http://127.0.0.1:7860/")  # doctest: +SKIP
    >>> picture, labels, *_ = client.predict(handle_file("street.png"), None, api_name="/segment")  # doctest: +SKIP
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fapn.app.analysis import analyze
from fapn.app.inputs import UploadError, read_image, read_label
from fapn.inference import Segmenter, save_label_png

__all__ = ["build_app", "launch", "segment_outputs", "make_workdir", "ALIGNMENT_HELP"]

ALIGNMENT_HELP = (
    "Each row is one Feature Alignment Module, finest first: its mean learned displacement (the mask-weighted mean "
    "of the 8 groups x 9 taps of the deformable conv) in flow colours (hue = direction, saturation = length; the "
    "colour wheel's rim is the largest displacement, in input pixels), the same displacement as arrows (scaled so "
    "that the longest is visible; the factor is in the title), and the mean modulation mask (dark = the FAM "
    "turns the sample down, yellow = keeps it). `fapn explain` draws the same pictures and the features before "
    "and after alignment."
)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "model"


def _prune(folder: Path, age_s: float = 3600.0) -> None:
    """Remove the result folders older than ``age_s`` (gradio keeps its own copies of what it served)."""
    now = time.time()
    for child in folder.glob("result_*"):
        try:
            if now - child.stat().st_mtime > age_s:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            pass


def segment_outputs(
    models: Sequence[tuple[str, Segmenter]],
    image_bytes: bytes | None,
    ground_truth_bytes: bytes | None,
    workdir: str | Path,
    *,
    max_side: int = 1024,
    panel_width: int = 480,
) -> tuple[Any, ...]:
    """The page's answer to one upload, without Gradio: the values of its seven outputs (see the module).

    Raises:
        UploadError: the image cannot be used (the ground truth's problems are notes, not errors).
    """
    if image_bytes is None:
        return None, None, None, "", [], "", "Upload an image or pick an example below."
    image, notes, original_size = read_image(image_bytes, max_side)
    ground_truth = None
    if ground_truth_bytes is not None:
        try:
            ground_truth, label_notes = read_label(ground_truth_bytes, image.shape[:2], original_size)
            notes += label_notes
        except UploadError as err:
            notes.append(f"ground truth not used: {err}")
    result = analyze(models, image, ground_truth, panel_width=panel_width)
    notes += result.notes
    folder = Path(workdir) / f"result_{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    label_files = []
    for index, model in enumerate(result.results):
        path = folder / f"{index}_{_slug(model.name)}_labels.png"
        save_label_png(model.label, path)
        label_files.append(str(path))
    table = result.table()
    if result.disagreement_fraction is not None:
        table += f"\n\nThe models disagree on {100 * result.disagreement_fraction:.2f}% of the pixels."
    gallery = [(r.alignment, f"{r.name}: FAM offsets, arrows, mask") for r in result.results if r.alignment is not None]
    if gallery:
        summary = "\n".join(f"- **{r.name}** {line}" for r in result.results for line in r.alignment_summary)
        summary += "\n\n" + ALIGNMENT_HELP
    else:
        summary = "None of the models has a Feature Alignment Module (the FPN baseline aligns nothing)."
    shown_notes = "\n".join(f"- {note}" for note in notes)
    return result.comparison, label_files, result.disagreement, table, gallery, summary, shown_notes


def _header(models: Sequence[tuple[str, Segmenter]], max_side: int) -> str:
    names = ", ".join(f"**{name}** ({segmenter.num_classes} classes)" for name, segmenter in models)
    return (
        "# FaPN: feature-aligned pyramids, side by side\n"
        f"Models: {names}, on {models[0][1].device}. Upload an image (PNG, JPEG, ...; images with a side above "
        f"{max_side} px are downscaled) or pick an example. An optional ground-truth label PNG (one channel of class "
        "indices, the image's size) adds each model's mIoU and boundary mIoU on this image. The *Alignment* tab "
        "shows what each Feature Alignment Module does on it."
    )


def build_app(
    models: Sequence[tuple[str, Segmenter]],
    workdir: str | Path,
    *,
    examples: Sequence[tuple[Path, Path | None]] = (),
    max_side: int = 1024,
    panel_width: int = 480,
) -> Any:
    """The page as a ``gradio.Blocks`` (not started: see :func:`launch`).

    Args:
        models: ``(title, segmenter)`` pairs in column order.
        workdir: a folder this app owns, for the label PNGs it serves (old results are pruned after an hour).
        examples: ``(image, ground truth)`` files offered as examples.
        max_side: longest image side analysed; larger uploads are downscaled (and the page says so).
        panel_width: width of each panel of the side-by-side figure.
    """
    import gradio as gr

    workdir = Path(workdir)

    def segment(image_bytes: bytes | None, ground_truth_bytes: bytes | None) -> tuple[Any, ...]:
        _prune(workdir)
        try:
            outputs = segment_outputs(
                models, image_bytes, ground_truth_bytes, workdir, max_side=max_side, panel_width=panel_width
            )
        except UploadError as err:
            raise gr.Error(str(err), title="This upload cannot be used", duration=None) from None
        except Exception as err:  # a model or drawing failure must not take the page down; the log has the trace
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"the models failed on this image: {type(err).__name__}: {err}", duration=None) from None
        if ground_truth_bytes is not None and "ground truth not used" in outputs[-1]:
            gr.Warning("The ground truth was not used: see the notes.")
        return outputs

    with gr.Blocks(title="FaPN vs FPN", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        # the outputs are made first (not rendered) so that the examples above them can name them
        notes = gr.Markdown(elem_id="notes", render=False)
        comparison = gr.Image(
            label="image | ground truth | each model",
            show_label=False,  # the picture's own titles say what each panel is
            type="numpy",
            format="png",
            interactive=False,
            elem_id="comparison",
            render=False,
        )
        table = gr.Markdown(elem_id="scores", render=False)
        disagreement = gr.Image(
            label="where the models disagree",
            type="numpy",
            format="png",
            interactive=False,
            elem_id="disagree",
            render=False,
        )
        labels_out = gr.File(label="label PNGs (class indices)", file_count="multiple", elem_id="labels", render=False)
        alignment = gr.Gallery(
            label="Feature Alignment Modules", columns=1, format="png", elem_id="alignment", render=False
        )
        alignment_text = gr.Markdown(elem_id="alignment-text", render=False)
        outputs = [comparison, labels_out, disagreement, table, alignment, alignment_text, notes]

        gr.Markdown(_header(models, max_side))
        with gr.Row():
            image_in = gr.File(label="image", type="binary", elem_id="image-upload")
            ground_truth_in = gr.File(
                label="ground truth (optional): label PNG of class indices", type="binary", elem_id="gt-upload"
            )
        if examples:  # a click fills both inputs, then runs once
            gr.Examples(
                examples=[[str(image), str(label) if label is not None else None] for image, label in examples],
                inputs=[image_in, ground_truth_in],
                outputs=outputs,
                fn=segment,
                run_on_click=True,
                cache_examples=False,
                api_visibility="private",
                label="Examples (image, ground truth)",
                elem_id="examples",
            )
        run = gr.Button("Segment", variant="primary")
        notes.render()
        with gr.Tabs():
            with gr.Tab("Predictions"):
                comparison.render()
                table.render()
                disagreement.render()
                labels_out.render()
            with gr.Tab("Alignment"):
                alignment.render()
                alignment_text.render()
        gr.on(
            triggers=[run.click, image_in.upload, ground_truth_in.upload],
            fn=segment,
            inputs=[image_in, ground_truth_in],
            outputs=outputs,
            api_name="segment",
            api_description=(
                "Segment an image with every model. Inputs: the image file, an optional ground-truth label PNG. "
                "Returns the side-by-side picture, the label PNGs, the disagreement map, the scores table, the "
                "alignment figures, their summary and the notes."
            ),
            trigger_mode="always_last",
            concurrency_limit=1,
        )
    return app


def launch(
    app: Any, host: str = "127.0.0.1", port: int | None = 7860, *, block: bool = True, max_file_size: str = "50mb"
) -> Any:
    """Serve ``app`` on ``host:port`` (loopback unless told otherwise), without a public share link.

    Args:
        block: wait until interrupted (the command line); ``False`` returns once the server answers.
        max_file_size: the largest upload accepted.
    """
    app.queue(default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        max_file_size=max_file_size,
        prevent_thread_lock=not block,
        quiet=True,
        inbrowser=False,
    )


def make_workdir() -> Path:
    """A fresh folder under the system's temp directory for one app's files (examples, label PNGs)."""
    return Path(tempfile.mkdtemp(prefix="fapn_app_"))
