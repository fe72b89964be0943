"""``report.html``: one self-contained page (pictures inlined as base64 data URIs), offline."""

from __future__ import annotations

import base64
import html
import os

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{padding:.25em .7em;border:1px solid #ddd;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #ddd;border-radius:6px;
padding:.6em 1em;min-width:8em}.card b{display:block;font-size:1.4em}
img{max-width:100%;height:auto;border:1px solid #eee}.scroll{max-height:30em;overflow:auto}
"""


def _image(path: str, alt: str) -> str:
    with open(path, "rb") as handle:
        data = base64.b64encode(handle.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _card(title: str, value) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
    return f'<div class="card">{html.escape(title)}<b>{text}</b></div>'


def _class_table(metrics: dict) -> str:
    rows = ["<tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th>"
            "</tr>"]
    for row in metrics["per_class"]:
        rows.append(f"<tr><td>{html.escape(row['class'])}</td><td>{row['precision']:.4f}</td>"
                    f"<td>{row['recall']:.4f}</td><td>{row['f1']:.4f}</td>"
                    f"<td>{row['support']}</td></tr>")
    for key, title in (("macro_avg", "macro mean"), ("weighted_avg", "weighted mean")):
        mean = metrics[key]
        rows.append(f"<tr><th>{title}</th><th>{mean['precision']:.4f}</th>"
                    f"<th>{mean['recall']:.4f}</th><th>{mean['f1']:.4f}</th>"
                    f"<th>{metrics['images']}</th></tr>")
    return '<div class="scroll"><table>' + "".join(rows) + "</table></div>"


def write_report(metrics: dict, pictures: dict, path: str) -> str:
    """Writes the page to ``path``.

    Args:
        metrics: the content of ``metrics.json``.
        pictures: ``{"confusion" | "reliability" | "per_class" | "gallery": PNG path}``.
        path: where the page goes.
    """
    calibration = metrics["calibration"]
    cards = [_card("images", metrics["images"]), _card("top-1 accuracy", metrics["top1_accuracy"]),
             _card("top-5 accuracy", metrics["top5_accuracy"]), _card("loss (NLL)", metrics["loss"]),
             _card("ECE (15 bins)", calibration["expected_calibration_error"]),
             _card("Brier score", calibration["brier_score"])]
    if metrics.get("server") is not None:
        cards.append(_card("max |served - local|", metrics["server"]["max_abs_difference"]))
    model = os.path.basename(os.path.normpath(str(metrics["model"])))
    data = os.path.basename(os.path.normpath(str(metrics["data"])))
    title = f"Evaluation of {model} on {data} ({metrics['split']})"
    sections = [
        ("Per class", _class_table(metrics)),
        ("Confusion matrix", _image(pictures["confusion"], "confusion matrix")),
        ("Calibration", _image(pictures["reliability"], "reliability diagram")),
        ("Accuracy per class", _image(pictures["per_class"], "per-class accuracy")),
        ("Most confident mistakes", _image(pictures["gallery"], "error gallery")),
    ]
    body = "".join(f"<h2>{html.escape(name)}</h2>{content}" for name, content in sections)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><div class=\"cards\">{''.join(cards)}</div>"
            f"{body}</body></html>\n")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return os.fspath(path)
