"""Deterministic synthetic document pages whose layout is known (the demo's workload).

Each page is drawn with Pillow only (the embedded default font, no system fonts) from
``random.Random(seed)``: a running header, a page title, section titles, paragraphs, a chart
with its caption, a table with its caption, a page-number footer, in one or two columns. The
generator records where it drew every region, so detections can be scored against it.

The style was tuned against the bundled layout model (``layout_cdla.onnx``): over pages 1–160
of seed 0 it finds 98–99 % of the regions. What mattered, measured: paragraphs at least three
lines long with a clear gap between them (else they merge or vanish), bold section titles well
above body size (else "text"), captions short and centred with a bold "Figure 3." label
(single lines wider than about 750 pixels are not found at all), a thin frame round the chart,
and "Page 7" rather than a bare "7" in the footer. Only classes in ``GROUND_TRUTH_CLASSES``
are recorded; every class drawn today is found reliably enough to be in it.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from edgesched.tools.demo.drawing import Canvas, draw_chart, draw_table

__all__ = [
    "GROUND_TRUTH_CLASSES",
    "GROUND_TRUTH_FILE",
    "Region",
    "generate_page",
    "load_ground_truth",
    "page_seed",
    "write_pages",
]

GROUND_TRUTH_FILE = "ground_truth.json"
# The classes the model finds reliably on these pages. A class taken out of this set is still
# drawn (real pages have it) but no longer counted.
GROUND_TRUTH_CLASSES = frozenset(
    {"text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer"}
)


@dataclass(frozen=True)
class Region:
    """A drawn region: class name as the layout model names it, box x1, y1, x2, y2 (pixels)."""

    class_name: str
    box: tuple[int, int, int, int]


# Sizes in pixels of a 1240-pixel-wide page; other widths scale them.
_BODY = 22
_SECTION = 34
_TITLE = 44
_CAPTION = 20
_BLOCK_GAP = 46  # below every block; with less the model merges neighbouring paragraphs
_CAPTION_GAP = 26  # between a caption and its figure or table
_CAPTION_WIDTH = 700
_INDENT = 44
_ROW = 42

_VOCABULARY = (
    "the scheduler assigns each task to the board with the lowest expected completion time "
    "while results stream back over the same link latency throughput measured across devices "
    "under load shows that queueing dominates transfer for small images and inference for "
    "large ones we evaluate three strategies on a cluster of heterogeneous edge boards with "
    "accelerators memory bandwidth power budget thermal throttling model partition batch size "
    "network jitter retransmission heartbeat interval membership failure detection recovery "
    "journal replay idempotent delivery exactly once semantics deadline admission control"
)
_WORDS = tuple(_VOCABULARY.split())
_SECTIONS = (
    *("Introduction", "Related Work", "System Design", "Scheduling Policy"),
    *("Evaluation", "Discussion", "Implementation", "Results"),
)
_VENUES = (
    "Proceedings of the Workshop on Edge Systems",
    "Journal of Distributed Inference",
    "Technical Report TR-2026",
    "International Conference on Edge Computing",
)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize()


def _caption_text(rng: random.Random) -> str:
    return _sentence(rng, 6, 12) + "."


def _paragraph_text(rng: random.Random) -> str:
    return " ".join(_sentence(rng, 8, 16) + "." for _ in range(rng.randint(3, 6)))


class _Flow:
    """Places blocks top to bottom in one or two columns; refuses a block that does not fit."""

    def __init__(
        self, left: int, right: int, top: int, bottom: int, columns: int, gap: int
    ) -> None:
        self.top = top
        self.bottom = bottom
        width = (right - left - gap * (columns - 1)) // columns
        self.columns = [
            (left + i * (width + gap), left + i * (width + gap) + width) for i in range(columns)
        ]
        self.index = 0
        self.y = top

    @property
    def x_range(self) -> tuple[int, int]:
        return self.columns[self.index]

    def reserve(self, height: int) -> int | None:
        """Return the y where a block of ``height`` goes, moving to the next column if needed."""
        if self.y + height > self.bottom:
            if self.index + 1 >= len(self.columns):
                return None
            self.index += 1
            self.y = self.top
            if self.y + height > self.bottom:
                return None
        y = self.y
        self.y += height
        return y


class _Page:
    """One page being drawn: canvas, flow of blocks and the regions recorded so far."""

    def __init__(self, seed: int, width: int, height: int) -> None:
        self.rng = random.Random(seed)
        self.unit = width / 1240
        self.canvas = Canvas(Image.new("RGB", (width, height), "white"), self.unit)
        self.regions: list[Region] = []
        self.seed = seed
        self.width = width
        self.height = height

    def px(self, size: float) -> int:
        return round(size * self.unit)

    def add(self, class_name: str, box: tuple[int, int, int, int]) -> None:
        self.regions.append(Region(class_name, box))

    def caption_span(self, column: tuple[int, int]) -> tuple[int, int]:
        x1, x2 = column
        width = min(x2 - x1, self.px(_CAPTION_WIDTH))
        left = x1 + (x2 - x1 - width) // 2
        return (left, left + width)

    def caption_height(self, label: str, text: str, column: tuple[int, int]) -> int:
        x1, x2 = self.caption_span(column)
        lines = self.canvas.wrap(f"{label} {text}", _CAPTION, x2 - x1)
        return len(lines) * self.canvas.line_height(_CAPTION)

    def frame(self) -> int:
        """Header, footer and page title; returns the y where the body starts."""
        canvas, rng, margin = self.canvas, self.rng, self.px(110)
        header = f"{rng.choice(_VENUES)}, vol. {rng.randint(1, 40)}"
        self.add("header", canvas.text((margin, self.px(60)), header, 20))
        # A bare page number is found with a confidence near 0.5 and a loose box (IoU about
        # 0.5); "Page 7" and "– 7 –" are found at about 0.9 with a tight box.
        footer = rng.choice(("Page {}", "– {} –")).format(rng.randint(1, 300))
        self.add(
            "footer", canvas.text_centred(self.width // 2, self.height - self.px(85), footer, 22)
        )
        # model.md saw the big title go unreported on its page; on these pages it is found as
        # "title" on every one of 160, so it counts.
        lines = canvas.wrap(_sentence(rng, 3, 6), _TITLE, self.width - 2 * margin)
        self.add("title", canvas.paragraph((margin, self.px(130)), lines, _TITLE))
        return self.px(130) + len(lines) * canvas.line_height(_TITLE) + self.px(40)

    def section(self, flow: _Flow, number: int) -> bool:
        text = f"{number}. {_SECTIONS[(self.seed + number) % len(_SECTIONS)]}"
        at = flow.reserve(self.canvas.line_height(_SECTION) + self.px(_BLOCK_GAP))
        if at is None:
            return False
        self.add("title", self.canvas.text((flow.x_range[0], at), text, _SECTION, bold=True))
        return True

    def paragraph(self, flow: _Flow) -> bool:
        x1, x2 = flow.x_range  # both columns have the same width
        lines = self.canvas.wrap(_paragraph_text(self.rng), _BODY, x2 - x1, self.px(_INDENT))
        height = len(lines) * self.canvas.line_height(_BODY)
        at = flow.reserve(height + self.px(_BLOCK_GAP))
        if at is None:
            return False
        box = self.canvas.paragraph((flow.x_range[0], at), lines, _BODY, self.px(_INDENT))
        self.add("text", box)
        return True

    def figure(self, flow: _Flow, number: int) -> None:
        rng, near = self.rng, self.px(_CAPTION_GAP)
        fig_h = self.px(rng.randint(300, 420))
        label, text = f"Figure {number}.", _caption_text(rng)
        cap_h = self.caption_height(label, text, flow.x_range)
        at = flow.reserve(fig_h + near + cap_h + self.px(_BLOCK_GAP))
        if at is None:
            return
        x1, x2 = flow.x_range
        fig_w = min(x2 - x1, self.px(rng.randint(600, 900)))
        left = x1 + (x2 - x1 - fig_w) // 2
        self.add("figure", draw_chart(self.canvas, rng, (left, at, left + fig_w, at + fig_h)))
        span = self.caption_span((x1, x2))
        box = self.canvas.caption(label, text, _CAPTION, span, at + fig_h + near)
        self.add("figure_caption", box)

    def table(self, flow: _Flow, number: int) -> None:
        rng, near = self.rng, self.px(_CAPTION_GAP)
        rows, cols = rng.randint(4, 7), rng.randint(3, 5)
        label, text = f"Table {number}.", _caption_text(rng)
        cap_h = self.caption_height(label, text, flow.x_range)
        at = flow.reserve(cap_h + near + rows * self.px(_ROW) + self.px(_BLOCK_GAP))
        if at is None:
            return
        x1, x2 = flow.x_range
        box = self.canvas.caption(label, text, _CAPTION, self.caption_span((x1, x2)), at)
        self.add("table_caption", box)
        top = (x1, at + cap_h + near, x2)
        self.add("table", draw_table(self.canvas, rng, top, rows, cols, self.px(_ROW)))


def generate_page(
    seed: int, width: int = 1240, height: int = 1754
) -> tuple[Image.Image, list[Region]]:
    """Draw page ``seed``; return it with its ground truth (``GROUND_TRUTH_CLASSES`` only).

    The same seed and size give the same pixels wherever the same Pillow is installed (the font
    is Pillow's own, not the system's).
    """
    page = _Page(seed, width, height)
    rng, margin = page.rng, page.px(110)
    top = page.frame()
    columns = 2 if rng.random() < 0.3 else 1
    flow = _Flow(margin, width - margin, top, height - page.px(140), columns, page.px(40))
    middle = ["para"] * rng.randint(1, 4) + ["figure", "table"]
    if rng.random() < 0.6:
        middle.append("section")
    rng.shuffle(middle)
    sections = figures = tables = 0
    # Paragraphs at the end fill the page; the first block that does not fit ends it.
    for kind in ["section", "para", "para", *middle, *["para"] * 4]:
        if kind == "section":
            sections += 1
            if not page.section(flow, sections):
                break
        elif kind == "para":
            if not page.paragraph(flow):
                break
        elif kind == "figure":
            figures += 1
            page.figure(flow, figures)
        else:
            tables += 1
            page.table(flow, tables)
    truth = [r for r in page.regions if r.class_name in GROUND_TRUTH_CLASSES]
    return page.canvas.image, truth


def page_seed(seed: int, index: int) -> int:
    """The generator seed of page ``index`` (1-based) in a set made with ``seed``."""
    return seed * 1_000_003 + index


def _region_to_json(region: Region) -> dict[str, object]:
    return {"class_name": region.class_name, "box": list(region.box)}


def write_pages(
    directory: Path, count: int, seed: int = 0, fmt: str = "png"
) -> dict[str, list[Region]]:
    """Write ``1.<fmt>`` … ``count.<fmt>`` and ``ground_truth.json``; return the ground truth.

    Keys are file names. Numeric stems keep the seed's natural sort order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ext = fmt.lower().lstrip(".")
    pil_format = Image.registered_extensions().get(f".{ext}")
    if pil_format is None:
        raise ValueError(f"unknown picture format {fmt!r}")
    truth: dict[str, list[Region]] = {}
    for index in range(1, count + 1):
        image, regions = generate_page(page_seed(seed, index))
        name = f"{index}.{ext}"
        buf = io.BytesIO()
        image.save(buf, pil_format)
        (directory / name).write_bytes(buf.getvalue())
        truth[name] = regions
    doc = {name: [_region_to_json(r) for r in regions] for name, regions in truth.items()}
    (directory / GROUND_TRUTH_FILE).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return truth


def _region_from_json(item: dict[str, object]) -> Region:
    box = item["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise ValueError(f"bad box in {GROUND_TRUTH_FILE}: {box!r}")
    x1, y1, x2, y2 = (int(v) for v in box)
    return Region(str(item["class_name"]), (x1, y1, x2, y2))


def load_ground_truth(directory: Path) -> dict[str, list[Region]]:
    """Read the ``ground_truth.json`` that :func:`write_pages` wrote (keys are file names)."""
    doc = json.loads((directory / GROUND_TRUTH_FILE).read_text(encoding="utf-8"))
    return {name: [_region_from_json(r) for r in regions] for name, regions in doc.items()}
