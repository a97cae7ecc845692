"""Every relative link and picture in README.md and docs/*.md points to a file of the checkout, and every
``#anchor`` to a heading of its target, by GitHub's rule for heading anchors (so the links work on GitHub)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("**/*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but ``-`` and ``_``), spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            anchor = github_anchor(match.group(1))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def test_anchor_rule() -> None:
    assert github_anchor("PointRend on FaPN: the paper's Cityscapes model") == (
        "pointrend-on-fapn-the-papers-cityscapes-model"
    )
    assert github_anchor("MaskFormer with the FaPN pixel decoder (`fapn.models.maskformer`)") == (
        "maskformer-with-the-fapn-pixel-decoder-fapnmodelsmaskformer"
    )
    assert github_anchor("CamVid study: Table 1's ablation over seeds") == "camvid-study-table-1s-ablation-over-seeds"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    if not (REPO / "docs").is_dir():
        pytest.skip("not a checkout")
    broken = []
    for target in LINK.findall(FENCE.sub("", doc.read_text())):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading with anchor #{anchor} in {path.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


NAME = re.compile(r"`(fapn(?:\.\w+)+)")


def resolve(dotted: str) -> object:
    """Import the longest importable module prefix of ``dotted`` and look the rest up as attributes."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def test_api_names_in_the_docs_exist() -> None:
    """Every ``fapn.x.y`` name the README and docs show in code type is importable, so a rename cannot leave the
    docs pointing at nothing."""
    names = sorted({name for doc in DOCS for name in NAME.findall(doc.read_text())})
    assert len(names) > 30
    with pytest.raises(AttributeError):
        resolve("fapn.models.no_such_builder")
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            missing.append(f"{name}: {error}")
    assert not missing, "\n".join(missing)
