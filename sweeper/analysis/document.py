"""A tiny document model rendered to Markdown and to self-contained HTML, so the two never disagree.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MAX_TABLE_ROWS = 40  # rows per table in the report; the full data is in best_scales.parquet


# --------------------------------------------------------------------------------------------------
# A tiny document model rendered to Markdown and HTML
# --------------------------------------------------------------------------------------------------
@dataclass
class _Block:
    kind: str  # heading | text | table | figure | bullets
    text: str = ""
    level: int = 2
    table: pd.DataFrame | None = None
    note: str = ""
    items: list[str] = field(default_factory=list)
    path: str = ""


class Doc:
    """Blocks in reading order; ``**bold**`` and ``code`` spans are the only inline markup."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Block("heading", text=text, level=level))

    def text(self, text: str) -> None:
        self.blocks.append(_Block("text", text=text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(_Block("bullets", items=list(items)))

    def table(self, df: pd.DataFrame, caption: str = "", max_rows: int = MAX_TABLE_ROWS) -> None:
        note = ""
        if len(df) > max_rows:
            note = f"… {len(df) - max_rows} more rows not shown (see best_scales.parquet / the trial files)."
            df = df.head(max_rows)
        self.blocks.append(_Block("table", text=caption, table=df, note=note))

    def figure(self, rel_path: str, caption: str) -> None:
        self.blocks.append(_Block("figure", text=caption, path=rel_path))

    # ---- Markdown
    def markdown(self) -> str:
        out: list[str] = []
        for b in self.blocks:
            if b.kind == "heading":
                out.append(f"{'#' * b.level} {b.text}\n")
            elif b.kind == "text":
                out.append(b.text + "\n")
            elif b.kind == "bullets":
                out.append("\n".join(f"- {i}" for i in b.items) + "\n")
            elif b.kind == "table" and b.table is not None:
                if b.text:
                    out.append(f"*{b.text}*\n")
                out.append(_md_table(b.table))
                if b.note:
                    out.append(b.note + "\n")
            elif b.kind == "figure":
                out.append(f"![{b.text}]({b.path})\n\n*{b.text}*\n")
        return "\n".join(out)

    # ---- HTML
    def html(self, title: str, out_dir: Path) -> str:
        body: list[str] = []
        toc: list[str] = []
        for i, b in enumerate(self.blocks):
            if b.kind == "heading":
                anchor = f"s{i}"
                if b.level == 2:
                    toc.append(f'<a href="#{anchor}">{html.escape(b.text)}</a>')
                body.append(f'<h{b.level} id="{anchor}">{_inline(b.text)}</h{b.level}>')
            elif b.kind == "text":
                body.append(f"<p>{_inline(b.text)}</p>")
            elif b.kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
            elif b.kind == "table" and b.table is not None:
                if b.text:  # a paragraph, not <caption>: captions wrap to the table's (narrow) width
                    body.append(f'<p class="cap">{_inline(b.text)}</p>')
                body.append(f'<div class="tw"><table>{_html_table(b.table)}</table></div>')
                if b.note:
                    body.append(f'<p class="note">{_inline(b.note)}</p>')
            elif b.kind == "figure":
                p = out_dir / b.path
                if p.exists():
                    data = base64.b64encode(p.read_bytes()).decode("ascii")
                    body.append(
                        f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(b.text)}</figcaption></figure>"
                    )
        nav = f"<nav>{' · '.join(toc)}</nav>" if toc else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><main>{nav}{''.join(body)}</main></body></html>\n"
        )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2329;background:#fff;
  margin:0;line-height:1.45}
main{max-width:1300px;margin:0 auto;padding:1.2rem 1rem 4rem}
h1{font-size:1.7rem;margin:.4rem 0 .8rem;border-bottom:2px solid #2b6cb0;padding-bottom:.3rem}
h2{font-size:1.3rem;margin-top:2.2rem;border-bottom:1px solid #d5dbe1;padding-bottom:.2rem;color:#1a4971}
h3{font-size:1.08rem;margin-top:1.4rem;color:#26303a}
nav{font-size:.85rem;background:#f3f6f9;border:1px solid #dde3ea;border-radius:6px;padding:.5rem .8rem;
  margin-bottom:1rem}
nav a{color:#2b6cb0;text-decoration:none;white-space:nowrap}
.tw{overflow-x:auto;margin:.4rem 0 1rem}
table{border-collapse:collapse;font-size:.82rem;min-width:40%}
.cap{font-style:italic;color:#4a5561;margin:.8rem 0 .3rem;font-size:.9rem}
th,td{border:1px solid #d5dbe1;padding:.26rem .48rem;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eaf0f6;font-weight:600;position:sticky;top:0}
tbody tr:nth-child(even){background:#f8fafc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{background:#f1f3f5;padding:0 .25rem;border-radius:3px;font-size:.92em}
figure{margin:1rem 0 1.6rem}
figure img{max-width:100%;height:auto;border:1px solid #e2e6ea;border-radius:4px}
figcaption{font-size:.85rem;color:#4a5561;margin-top:.25rem}
.note{font-size:.82rem;color:#6b7682;margin-top:-.6rem}
ul{padding-left:1.3rem}
li{margin:.2rem 0}
"""


def _inline(text: str) -> str:
    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<i>\1</i>", s)
    return s


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        x = float(v)
        return "n/a" if not math.isfinite(x) else f"{x:.4g}"
    if isinstance(v, list | tuple | np.ndarray):
        return ", ".join(_cell_text(x) for x in v)
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty and len(df.columns) == 0:
        return "(empty)\n"
    idx = df.index.name is not None
    headers = ([str(df.index.name)] if idx else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |", "|" + "---|" * len(headers)]
    for i, row in zip(df.index, df.itertuples(index=False), strict=True):
        cells = ([_cell_text(i)] if idx else []) + [_cell_text(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    idx = df.index.name is not None
    headers = ([str(df.index.name)] if idx else []) + [str(c) for c in df.columns]
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>"
    rows = []
    for i, row in zip(df.index, df.itertuples(index=False), strict=True):
        vals = ([i] if idx else []) + list(row)
        tds = []
        for v in vals:
            cls = (
                ' class="num"'
                if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
                else ""
            )
            tds.append(f"<td{cls}>{_inline(_cell_text(v))}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return head + "<tbody>" + "".join(rows) + "</tbody>"
