"""``fapn app``: a web page that runs FPN and FaPN checkpoints on an uploaded image and shows both answers, where
they disagree, per-image scores against a ground truth, and what each Feature Alignment Module does.

``inputs`` reads uploads, ``analysis`` computes and draws (no web code), ``examples`` writes the example images,
``page`` is the Gradio page (the optional ``app`` extra: ``pip install "fapn[app]"``). Importing this package
does not import Gradio.

Example:
    >>> from fapn.app import analyze, read_image
    >>> from fapn.inference import Segmenter
    >>> models = [("FaPN", Segmenter.from_checkpoint("fapn_demo/fapn/last.pt"))]  # doctest: +SKIP
    >>> image, notes, _ = read_image(open("street.png", "rb").read())  # doctest: +SKIP
    >>> analyze(models, image).results[0].latency_ms  # doctest: +SKIP
"""

from fapn.app.analysis import Analysis, ModelResult, analyze, score_image
from fapn.app.examples import write_examples
from fapn.app.inputs import UploadError, read_image, read_label

__all__ = [
    "analyze",
    "Analysis",
    "ModelResult",
    "score_image",
    "read_image",
    "read_label",
    "UploadError",
    "write_examples",
]
