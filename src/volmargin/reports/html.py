"""HTML pieces of the report: number formats, tables, images and the self-contained page shell.

The page carries its own CSS and a tiny self-check script: on `load` it counts script errors and
decoded images and writes them into `<div id="report-status" data-errors=.. data-images-ok=..>`.
"""

from __future__ import annotations

from html import escape

import pandas as pd

FORMATS = {
    "int": lambda x: f"{int(x):,}",
    "pct": lambda x: f"{round(100 * x, 2) + 0.0:.2f}%",  # + 0.0: no "-0.00%"
    # a breach rate to 3 decimals: 1.0046% printed as 1.00% read as the 1% target it misses
    "rate": lambda x: f"{round(100 * x, 3) + 0.0:.3f}%",
    "p": lambda x: f"{x:.3g}" if x >= 0.001 else "&lt;0.001",  # a p-value is never printed as 0
    "f2": lambda x: f"{x:.2f}",
    "f3": lambda x: f"{x:.3f}",
    "f4": lambda x: f"{x:.4f}",
    "sec": lambda x: f"{x:,.1f} s",
}
NOT_RECORDED = '<span class="na">not recorded</span>'
FOLD_ROWS = 20  # per-asset tables longer than this start folded, so that a 129-asset report reads top-down

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
 margin:0 auto;max-width:1280px;padding:0 24px 48px}
h1{font-size:24px;margin:24px 0 4px}
h2{font-size:19px;border-bottom:2px solid #dde3ea;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin:18px 0 6px}
nav ol{columns:4;margin:8px 0;padding-left:20px}nav{background:#f5f7fa;border:1px solid #e3e8ee;padding:6px 12px}
a{color:#1a5fb4}.note,.meta{color:#555;font-size:13px}.na{color:#999}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}th,td{padding:3px 9px;border-bottom:1px solid #e6e9ee}
th{background:#f0f3f7;text-align:left;font-weight:600;position:sticky;top:0}th.num,td.num{text-align:right;
 font-variant-numeric:tabular-nums}td.num{white-space:nowrap}tbody tr:nth-child(even){background:#fafbfc}
.zone-green{background:#cdebd0}.zone-yellow{background:#fff1a8}.zone-red{background:#f6c1bb}
.badge{display:inline-block;min-width:14px;padding:0 4px;margin-right:2px;border-radius:3px;text-align:center}
.banner{padding:8px 12px;border-radius:4px;margin:10px 0;font-weight:600}
.synthetic{background:#fff1a8;border:1px solid #e0c200}.real{background:#e3f1e4;border:1px solid #8fc295}
.unknown{background:#eee;border:1px solid #ccc}
details{margin:8px 0}summary{cursor:pointer;color:#1a5fb4}
img{max-width:100%;height:auto;display:block;margin:8px 0}pre{background:#f5f7fa;border:1px solid #e3e8ee;
 padding:10px;overflow:auto;font-size:12px;max-height:420px}
#report-status{color:#aaa;font-size:11px;margin-top:40px}
"""

STATUS_SCRIPT = """
window.__reportErrors=[];
window.addEventListener('error',function(e){window.__reportErrors.push(String(e.message||e.type))},true);
window.addEventListener('load',function(){
 var imgs=Array.prototype.slice.call(document.images);
 var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0}).length;
 var s=document.getElementById('report-status');
 s.setAttribute('data-errors',String(window.__reportErrors.length));
 s.setAttribute('data-images-ok',ok+'/'+imgs.length);
 s.setAttribute('data-sections',Array.prototype.map.call(document.querySelectorAll('section[id]'),
  function(x){return x.id}).join(' '));
 s.textContent='self-check: '+ok+'/'+imgs.length+' images decoded, '+window.__reportErrors.length+' script errors';
});
"""


def missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def fmt(value: object, kind: str | None) -> str:
    """Escaped text of one value; `kind` picks a number format from FORMATS."""
    if missing(value):
        return '<span class="na">–</span>'
    if kind in FORMATS:
        return FORMATS[kind](value)
    if kind == "check":
        return "✓" if value else "✗"  # an empty cell read as "not recorded"
    return escape(str(value))


def zone_badge(zone: object, text: str) -> str:
    if missing(zone):
        return '<span class="na">–</span>'
    return f'<span class="badge zone-{escape(str(zone))}" title="{escape(str(zone))}">{escape(text)}</span>'


def td(value: object, kind: str | None) -> str:
    if kind == "zone":
        return "<td>–</td>" if missing(value) else f'<td class="zone-{escape(str(value))}">{escape(str(value))}</td>'
    if kind == "zones":  # "long|short" pair shown as two coloured letters
        pair = str(value).split("|") if not missing(value) else ["nan", "nan"]
        return "<td>" + "".join(zone_badge(None if z == "nan" else z, tag) for z, tag in zip(pair, "LS")) + "</td>"
    numeric = kind in FORMATS or kind == "check"
    return f'<td{" class=num" if numeric else ""}>{fmt(value, kind)}</td>'


def table(frame: pd.DataFrame, kinds: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> str:
    """A table of `frame`'s columns in order; numbers right-aligned, missing values as a dash."""
    kinds, labels = kinds or {}, labels or {}
    head = "".join(f'<th{" class=num" if kinds.get(c) in FORMATS else ""}>{escape(labels.get(c, str(c)))}</th>'
                   for c in frame.columns)
    body = "".join("<tr>" + "".join(td(v, kinds.get(c)) for c, v in zip(frame.columns, row)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def folded(summary: str, body: str, rows: int) -> str:
    """`body` under a `<details>` line `summary` (HTML) when it has more than `FOLD_ROWS` rows; else as it is."""
    if rows <= FOLD_ROWS:
        return body
    return f"<details><summary>{summary} ({rows:,} rows: click to open)</summary>{body}</details>"


def key_values(pairs: dict[str, object]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{NOT_RECORDED if missing(v) or v == '' else escape(str(v))}</td></tr>"
                   for k, v in pairs.items())
    return f"<table>{rows}</table>"


def img(png_base64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{png_base64}" alt="{escape(alt)}">'


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def page(title: str, header: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole document: head with CSS and the self-check, a table of contents, the sections."""
    toc = "".join(f'<li><a href="#{sid}">{escape(heading)}</a></li>' for sid, heading, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{escape(heading)}</h2>{content}</section>'
                   for sid, heading, content in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>'
            f"<style>{CSS}</style><script>{STATUS_SCRIPT}</script></head><body><h1>{escape(title)}</h1>{header}"
            f'<nav><strong>Contents</strong><ol>{toc}</ol></nav>{body}'
            f'<div id="report-status" data-errors="" data-images-ok="">self-check did not run</div></body></html>')
