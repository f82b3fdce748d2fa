"""index.html: the report as one self-contained page (CSS inline, plots embedded, no network).

The page is assembled from performance.md and the plot files, not written section by section:
the markdown's opening lines, its verdicts and its headline table come first, then every plot
with its caption, then the remaining sections in their markdown order. A new section or plot
appears without touching this module. Only the markdown the report writes is understood:
headings, bullet lists, quotes, pipe tables, paragraphs, **bold** and `code`.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

# Sections (by the start of their heading) shown before the plots, in the markdown's order.
FIRST_SECTIONS = ("Verdicts", "The table")

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       max-width: 1200px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: 0.4rem 0 0.6rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 0.6rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; }
nav { font-size: 0.9rem; margin-bottom: 0.8rem; }
nav a { margin-right: 1rem; }
ul { padding-left: 1.3rem; }
li { margin: 0.25rem 0; }
code { font-size: 0.9em; background: #f2f2f2; padding: 0 0.2em; word-break: break-all; }
blockquote { margin: 0.8rem 0; padding: 0.6rem 0.9rem; background: #fff6dc; border-left: 4px solid #c9a227; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #bbb; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.badge { display: inline-block; padding: 0 0.45em; border-radius: 3px; font-weight: bold; }
.PASS { background: #d7f0d7; color: #0b5d0b; }
.FAIL { background: #f7d4d4; color: #8a1010; }
.na { background: #e6e6e6; color: #333; }
figure { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 1.2rem; align-items: start;
         margin: 1rem 0 1.8rem; }
figure img { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption h3 { margin: 0 0 0.4rem; font-size: 1.05rem; }
figcaption p { margin: 0 0 0.6rem; }
@media (max-width: 900px) { figure { grid-template-columns: 1fr; } }
"""


@dataclass(frozen=True)
class Plot:
    path: Path
    caption: str  # plain text; paragraphs separated by blank lines


def caption_for(path: Path, captions: Path | None) -> str:
    """The plot's caption: `<captions>/<plot name>.rst` (the one snakemake --report shows), or ""."""
    if captions is None or not (captions / f"{path.stem}.rst").is_file():
        return ""
    return (captions / f"{path.stem}.rst").read_text(encoding="utf-8").strip()


def inline(text: str) -> str:
    """Escape, then **bold** and `code` (rst's ``code`` too)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"``([^`]+)``|`([^`]+)`", lambda m: f"<code>{m.group(1) or m.group(2)}</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    # a verdict's outcome as a badge: "**scaling: PASS**"
    return re.sub(r"<strong>([^<]*): (PASS|FAIL|n/a)</strong>",
                  lambda m: f'<strong>{m.group(1)}:</strong> <span class="badge {m.group(2).replace("/", "")}">'
                            f"{m.group(2)}</span>", out)


# a number and its unit in a table cell: one word, so a narrow column never breaks "63.2 s" in two
VALUE_UNIT = re.compile(r"(\d) (s|ms|GB|MB|KB|B|M|x|%)(?![\w-])")


def cell(text: str) -> str:
    return VALUE_UNIT.sub("\\1&nbsp;\\2", inline(text))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def blocks_to_html(lines: list[str]) -> str:
    """The markdown subset the report writes, as HTML."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            title = line[level:].strip()
            out.append(f'<h{level} id="{anchor(title)}">{inline(title)}</h{level}>')
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
            trs = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>')
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith(">"):
            quotes = []
            while i < len(lines) and lines[i].startswith(">"):
                quotes.append(f"<p>{inline(lines[i].lstrip('>').strip())}</p>")
                i += 1
            out.append("<blockquote>" + "".join(quotes) + "</blockquote>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "- ", ">")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(para))}</p>")
    return "\n".join(out)


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def split_sections(md: str) -> tuple[str, list[str], list[tuple[str, list[str]]]]:
    """(title, lines before the first section, [(section heading, its lines)])."""
    title, pre, sections = "tier1 report", [], []
    for line in md.splitlines():
        if line.startswith("# ") and not sections and not pre:
            title = line[2:].strip()
        elif line.startswith("## "):
            sections.append((line[3:].strip(), [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            pre.append(line)
    return title, pre, sections


def figure(plot: Plot) -> str:
    data = base64.b64encode(plot.path.read_bytes()).decode("ascii")
    name = plot.path.stem.replace("_", " ").capitalize()
    paragraphs = [p for p in re.split(r"\n\s*\n", plot.caption) if p.strip()]
    text = "".join(f"<p>{inline(' '.join(p.split()))}</p>" for p in paragraphs)
    return (f'<figure id="plot-{anchor(plot.path.stem)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(name)} plot"><figcaption><h3>{html.escape(name)}</h3>{text}</figcaption></figure>')


def to_html(md: str, plots: list[Plot]) -> str:
    title, pre, sections = split_sections(md)
    first = [s for s in sections if s[0].startswith(FIRST_SECTIONS)]
    rest = [s for s in sections if not s[0].startswith(FIRST_SECTIONS)]
    nav = [(anchor(h), h) for h, _ in first] + ([("plots", "Plots")] if plots else []) + \
        [(anchor(h), h) for h, _ in rest]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{inline(title)}</h1>",
        "<nav>" + "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h in nav) + "</nav>",
        blocks_to_html(pre),
        *(blocks_to_html(lines) for _, lines in first),
    ]
    if plots:
        parts += ['<h2 id="plots">Plots</h2>', *(figure(p) for p in plots)]
    parts += [blocks_to_html(lines) for _, lines in rest]
    parts.append("</body></html>\n")
    return "\n".join(parts)
