"""``sweep report``: a self-contained page whose numbers are the datasets' own.

The page is built once (``sweep report -o DIR``, the shipped specs) and read back: links and
images, section headings, the claims table against values computed here directly with
``sweep.run`` / ``sweep.law`` on the same specs, and the data file behind every figure.
Self-contained means: every ``src`` is a ``data:`` URI, every ``href`` is a fragment, a file in
the report folder, or a citation link to arxiv.org (a link the reader may follow, never a
resource the page loads); no scripts, stylesheets or ``url(...)`` of any kind.
"""

import base64
import csv
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweep
from sweep import cli
from sweep import html_report as report
from sweep.law_fit import law

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "grids"
RTOL = 1e-12


class Page(HTMLParser):
    """Tags, attributes, h2 headings, and the links inside each <figure id=...>."""

    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.headings, self._h = [], [], [], None
        self.figures, self._fig = {}, None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)
        attrs = dict(attrs)
        if tag == "h2":
            self._h = ""
        if tag == "figure":
            self._fig = attrs["id"]
            self.figures[self._fig] = []
        if tag == "a" and self._fig:
            self.figures[self._fig].append(attrs["href"])

    def handle_data(self, data):
        if self._h is not None:
            self._h += data

    def handle_endtag(self, tag):
        if tag == "figure":
            self._fig = None
        if tag == "h2":
            self.headings.append(self._h)
            self._h = None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert cli.main(["report", "-o", str(out)]) == 0
    index = out / "index.html"
    page = Page()
    text = index.read_text(encoding="utf-8")
    page.feed(text)
    rows = {r["key"]: r for r in csv.DictReader(open(out / "claims.csv", newline=""))}
    return out, text, page, rows


@pytest.fixture(scope="module")
def direct():
    """The shipped specs' datasets, computed here, independently of the report."""
    names = ("paper", "report-generations", "report-moe", "report-moe-active")
    return {n: sweep.run(GRIDS / f"{n}.toml", progress=False) for n in names}


def test_page_is_self_contained(built):
    out, text, page, _ = built
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert "url(" not in text and "@import" not in text and "http://" not in text
    images = [v for tag, k, v in page.attrs if k == "src"]
    assert len(images) >= 10
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    hrefs = [v for tag, k, v in page.attrs if k == "href"]
    assert any(h.startswith("https://arxiv.org/abs/2603.17280") for h in hrefs)
    for h in hrefs:
        if h.startswith("#"):
            continue
        if h.startswith("https://"):
            assert h.startswith("https://arxiv.org/"), h  # citations only
            continue
        assert "/" not in h and (out / h).is_file(), h  # a file beside index.html
    for _tag, k, v in page.attrs:
        if k in ("src", "href", "action", "poster", "data"):
            assert not v.startswith("http://")
            assert not (k != "href" and v.startswith("https://"))


def test_every_section_heading(built):
    _, _, page, _ = built
    for _, title in report.SECTIONS:
        assert title in page.headings, title
    assert "No fleet spec" not in built[1]  # the shipped specs include one


def test_every_figure_has_its_data(built):
    out, text, page, _ = built
    assert {f.split("-")[0] for f in page.figures} >= set("abcdeg")
    for f, links in page.figures.items():
        assert f"{f}.png" in links
        data = [h for h in links if not h.endswith(".png")]
        assert data, f"figure {f} links no data"
        for name in data:
            path = out / name
            if path.suffix == ".csv":
                with open(path, newline="") as fh:
                    rows = list(csv.reader(fh))
                assert len(rows) >= 2 and len(rows[0]) >= 2
            else:
                assert path.suffix == ".nc"
                with xr.open_dataset(path, engine="netcdf4") as ds:
                    assert ds.data_vars
        assert (out / f"{f}.png").stat().st_size > 5_000
    assert len(page.figures) == text.count("<figure ")
    assert (out / "claims.csv").is_file()


def _close(cell: str, value: float) -> bool:
    return math.isclose(float(cell), float(value), rel_tol=RTOL)


def test_claims_equal_the_datasets(built, direct):
    _, text, _, rows = built
    cal = direct["paper"]
    gen = direct["report-generations"].squeeze(["model", "tp", "dtype", "batch"])
    h100 = cal.sel(gpu="h100")
    sxm = gen.sel(gpu="h100-sxm")
    for ctx in (4096, 65536):
        r = rows[f"tok_per_watt_{ctx}"]
        assert _close(r["calibrated_value"], h100.tok_per_watt.sel(context=ctx))
        assert _close(r["roofline_value"], sxm.tok_per_watt.sel(context=ctx))
        assert _close(
            r["ratio_calibrated"], h100.tok_per_watt.sel(context=ctx) / float(r["paper_value"])
        )
        r = rows[f"concurrency_{ctx}"]
        assert _close(r["calibrated_value"], h100.concurrency.sel(context=ctx))
        assert _close(r["roofline_value"], sxm.concurrency.sel(context=ctx))
    # the paper's headline, reproduced in calibrated mode (MODEL.md section 1)
    assert float(rows["tok_per_watt_4096"]["calibrated_value"]) == pytest.approx(17.6, rel=2e-3)
    assert float(rows["tok_per_watt_65536"]["calibrated_value"]) == pytest.approx(1.5, rel=2e-3)
    assert float(rows["concurrency_4096"]["calibrated_value"]) == 256
    assert float(rows["concurrency_65536"]["calibrated_value"]) == 16

    r = rows["slope"]
    assert _close(r["calibrated_value"], law(cal).slope.sel(gpu="h100"))
    assert _close(r["roofline_value"], law(gen).slope.sel(gpu="h100-sxm"))

    r = rows["spread"]
    assert _close(r["calibrated_value"], h100.tok_per_watt.max() / h100.tok_per_watt.min())
    assert _close(r["roofline_value"], sxm.tok_per_watt.max() / sxm.tok_per_watt.min())

    r = rows["b200_over_h100"]
    at = gen.tok_per_watt.sel(context=report.GEN_CONTEXT)
    assert _close(r["roofline_value"], at.sel(gpu="b200") / at.sel(gpu="h100-sxm"))
    assert r["calibrated_value"] == ""
    assert r["calibrated_note"] == "not available in calibrated mode: no published B200 profile"

    moe = direct["report-moe"].sel(gpu="h100-sxm", dtype="bf16", context=8192).squeeze()
    qwen = moe.tok_per_watt.sel(model="qwen3-235b-a22b")
    assert _close(rows["moe_tok_per_watt_8192"]["roofline_value"], qwen)
    ratio = qwen / moe.tok_per_watt.sel(model="llama-3.1-70b")
    assert _close(rows["moe_over_dense_8192"]["roofline_value"], ratio)
    for key in ("moe_tok_per_watt_8192", "moe_over_dense_8192"):
        assert rows[key]["calibrated_note"].startswith("not available in calibrated mode")
        assert "TP8" in rows[key]["roofline_settings"] and "bf16" in rows[key]["roofline_settings"]
    active = direct["report-moe-active"].sel(gpu="h100-sxm", dtype="bf16", context=8192)
    active_qwen = float(active.tok_per_watt.sel(model="qwen3-235b-a22b").squeeze())
    assert report._fmt(active_qwen) in rows["moe_tok_per_watt_8192"]["explanation"]

    # every row: the paper's value with its source, and our values as the page prints them
    for r in rows.values():
        assert r["paper_source"] == "arXiv 2603.17280, abstract"
        assert r["explanation"]
        for mode in ("calibrated", "roofline"):
            if r[f"{mode}_value"]:
                assert report._fmt(float(r[f"{mode}_value"])) in text
            else:
                assert r[f"{mode}_note"] in text


def test_only_the_specs_given(tmp_path):
    """A report of the calibrated spec alone: roofline cells say they are not in its specs."""
    index = report.report([GRIDS / "paper.toml"], tmp_path / "r")
    assert index == tmp_path / "r" / "index.html" and index.is_file()
    rows = {r["key"]: r for r in csv.DictReader(open(tmp_path / "r" / "claims.csv", newline=""))}
    assert _close(rows["tok_per_watt_4096"]["calibrated_value"], 17.621989664928126)
    assert rows["tok_per_watt_4096"]["roofline_note"] == report.NOT_IN_SPECS
    text = index.read_text()
    assert "No fleet spec was given to this report." in text
    assert np.isfinite(float(rows["slope"]["calibrated_value"]))


def test_a_spec_with_one_context(tmp_path):
    """No line to draw and no slope to fit: those sections skip it; the claims still find B200."""
    spec = {
        "name": "one-window",
        "mode": "roofline",
        "axes": {
            "context": [8192],
            "gpu": ["h100-sxm", "b200"],
            "model": ["llama-3.1-70b"],
            "tp": [8],
        },
    }
    index = report.report([spec], tmp_path)
    page = Page()
    page.feed(index.read_text())
    assert set(page.figures) == {"d-one-window"}
    rows = {r["key"]: r for r in csv.DictReader(open(tmp_path / "claims.csv", newline=""))}
    ds = sweep.run(spec, progress=False).tok_per_watt.squeeze()
    expected = float(ds.sel(gpu="b200")) / float(ds.sel(gpu="h100-sxm"))  # a float32 spec
    assert _close(rows["b200_over_h100"]["roofline_value"], expected)
    assert rows["slope"]["roofline_note"] == report.NOT_IN_SPECS
