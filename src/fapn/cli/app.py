"""``fapn app``: a local web page to compare FPN and FaPN on your own images (Gradio, the ``app`` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from fapn.cli.common import add_device_argument, add_precision_argument, add_threads_argument

__all__ = ["register", "run", "DEMO_CHECKPOINTS"]

DEMO_CHECKPOINTS = (("FPN", "fpn/last.pt"), ("FaPN", "fapn/last.pt"))
"""The checkpoints ``fapn demo`` writes under its output folder, with their titles."""

EPILOG = """\
the page:
  upload an image or pick an example (synthetic street scenes; CamVid val frames when FAPN_DATA holds
  camvid-half/); each model's labels over the image side by side with a legend, each model's latency, where the
  models disagree, and with an optional ground-truth label PNG each model's mIoU and boundary mIoU on that image;
  the Alignment tab draws each FAM's offsets (flow colours, colour wheel, arrows) and modulation mask; the label
  PNGs can be downloaded. Bad uploads get a message on the page; the server keeps running.

the API (gradio_client, pip install gradio_client):
  from gradio_client import Client, handle_file
  client = Client("http://127.0.0.1:7860/")
  picture, labels, *rest = client.predict(handle_file("street.png"), None, api_name="/segment")
  # picture: the side-by-side PNG; labels: one label PNG (class indices) per model

examples:
  fapn demo && fapn app                                   # the two checkpoints fapn demo trained
  fapn app --weights runs/fpn/best.pt runs/fapn/best.pt --names FPN FaPN --threads 2
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "app",
        help="web page: upload an image, see FPN and FaPN side by side and the alignment (needs fapn[app])",
        description=(
            "Serve a web page (Gradio) that runs each checkpoint on an uploaded image. The models are loaded once "
            "and run one request at a time. Binds 127.0.0.1 unless --host says otherwise; nothing a client sends is "
            'used as a path. Needs the app extra: pip install "fapn[app]".'
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        default=None,
        metavar="CKPT",
        help="checkpoints, in column order (default: DEMO/fpn/last.pt and DEMO/fapn/last.pt that fapn demo writes)",
    )
    parser.add_argument("--names", nargs="+", default=None, help="a title per checkpoint (default: the necks)")
    parser.add_argument(
        "--demo", default="fapn_demo", metavar="DEMO", help="fapn demo's output folder (default: fapn_demo)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--max-side",
        type=int,
        default=1024,
        metavar="PX",
        help="longer side above which uploads are downscaled (default: 1024)",
    )
    parser.add_argument("--panel-width", type=int, default=480, metavar="PX", help="width of each panel (default: 480)")
    parser.add_argument(
        "--no-examples", action="store_true", help="offer no example images (default: synthetic scenes, CamVid)"
    )
    add_device_argument(parser)
    add_threads_argument(parser)
    add_precision_argument(parser)
    parser.set_defaults(func=run)


def checkpoints(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """``(title or None, checkpoint)`` pairs from ``--weights``/``--names``, or the demo's checkpoints.

    Raises:
        ValueError: ``--names`` and ``--weights`` counts differ.
        FileNotFoundError: no ``--weights`` and no demo checkpoint, saying how to get some.
    """
    from pathlib import Path

    if args.weights is None:
        if args.names is not None:
            raise ValueError("--names needs --weights (the demo's checkpoints are titled FPN and FaPN)")
        demo = Path(args.demo)
        found = [(name, str(demo / path)) for name, path in DEMO_CHECKPOINTS if (demo / path).is_file()]
        if not found:
            raise FileNotFoundError(
                f"no --weights given and no fapn demo checkpoints in {demo}/ (fpn/last.pt, fapn/last.pt): run "
                "'fapn demo' first (a few minutes on a CPU), or give --weights CKPT [CKPT ...]"
            )
        return [(name, path) for name, path in found]
    if args.names is not None and len(args.names) != len(args.weights):
        raise ValueError(f"{len(args.weights)} checkpoints but {len(args.names)} --names")
    names = args.names or [None] * len(args.weights)
    return list(zip(names, args.weights))


def run(args: argparse.Namespace) -> int:
    from fapn.cli.common import require_extra, setup_runtime, warn

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must lie in 0..65535, got {args.port}")
    if args.max_side < 32 or args.panel_width < 32:
        raise ValueError("--max-side and --panel-width must be at least 32 pixels")
    pairs = checkpoints(args)
    require_extra(["gradio"], "fapn app")
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from fapn.app import analyze, write_examples
    from fapn.app.page import build_app, launch, make_workdir
    from fapn.inference import Segmenter
    from fapn.inference.loading import model_label

    device = setup_runtime(args)
    models: list[tuple[str, Segmenter]] = []
    for name, weights in pairs:
        segmenter = Segmenter.from_checkpoint(weights, device=device, precision=args.precision)
        title = name or model_label(segmenter.model, fallback=Path(weights).stem)
        if title in [existing for existing, _ in models]:
            title = f"{title} #{len(models) + 1}"
        models.append((title, segmenter))
    workdir = make_workdir()
    examples = [] if args.no_examples else write_examples(workdir / "examples")
    # one warm-up request, so that the first latency shown is as fast as the next ones
    warm_up = np.asarray(Image.open(examples[0][0]).convert("RGB")) if examples else np.zeros((64, 64, 3), np.uint8)
    analyze(models, warm_up, panel_width=args.panel_width)
    app = build_app(models, workdir, examples=examples, max_side=args.max_side, panel_width=args.panel_width)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"--host {args.host}: the page (which has no login) is open to every machine that can reach this one")
    shown = ", ".join(f"{title} ({weights})" for (title, _), (_, weights) in zip(models, pairs))
    print(f"fapn app: {shown} on {device}; open http://{args.host}:{args.port}/ (Ctrl+C stops)", flush=True)
    try:
        launch(app, args.host, args.port)
    finally:
        import shutil

        app.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
