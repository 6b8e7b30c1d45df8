"""Tables formatted for reading: numbered and captioned, numbers rounded, no raw booleans or nan."""

from __future__ import annotations

import html
import math
import numbers

import pandas as pd

__all__ = ["MAX_COLUMNS", "cell_text", "table_html"]

MAX_COLUMNS = 9  # wider tables do not fit the content column: pivot them


def cell_text(value, digits: int = 3, style: str | None = None) -> str | None:
    """A cell as a reader reads it: ``None`` for a missing value (nan, None), "yes"/"no" for a
    boolean, integers with thousands separators, floats to ``digits`` decimals (scientific beyond
    that range); ``style`` (a format string such as ``"{:.1%}"``) overrides the number format."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if style is not None:
        return style.format(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if x != 0 and (abs(x) >= 10 ** 6 or abs(x) < 10 ** -digits):
            mantissa, exponent = f"{x:.2e}".split("e")
            return f"{mantissa} × 10<sup>{int(exponent)}</sup>"
        return f"{x:,.{digits}f}".replace("-", "−")
    return html.escape(str(value))


def table_html(frame: pd.DataFrame, label: str, caption: str, anchor: str, *, digits: int = 3,
               formats: dict[str, str] | None = None, missing: str | None = None, index: bool | None = None) -> str:
    """``frame`` as a captioned HTML table ("Table 2.1. caption") that fits the content column.

    Refuses more than :data:`MAX_COLUMNS` columns (pivot the table) and a missing value unless
    ``missing`` says why values are missing (shown as a dash with that footnote). ``index``
    (default: when the index has a name) shows the index as the first column."""
    if not caption or not caption.strip():
        raise ValueError(f"{label} needs a caption that says what the table shows")
    show_index = any(n is not None for n in frame.index.names) if index is None else index
    columns = len(frame.columns) + (frame.index.nlevels if show_index else 0)
    if columns > MAX_COLUMNS:
        raise ValueError(f"{label} has {columns} columns, more than {MAX_COLUMNS} fit the content column: "
                         f"pivot it (long format, or one table per group)")
    formats = formats or {}
    unknown = set(formats) - set(map(str, frame.columns))
    if unknown:
        raise ValueError(f"formats names columns {sorted(unknown)} that {label} does not have: {list(frame.columns)}")
    head = [str(n) if n is not None else "" for n in frame.index.names] if show_index else []
    head += [str(c) for c in frame.columns]
    rows, dashes = [], 0
    for key, row in frame.iterrows():
        keys = (key if isinstance(key, tuple) else (key,)) if show_index else ()
        cells = [html.escape(str(k)) for k in keys]
        for column, value in row.items():
            text = cell_text(value, digits, formats.get(str(column)))
            dashes += text is None
            cells.append("–" if text is None else text)
        rows.append(cells)
    if dashes and not missing:
        raise ValueError(f"{label} has {dashes} missing values: say why with missing='...' (shown as a "
                         f"dash with that footnote), or fill or drop them")
    numeric = [False] * (len(head) - len(frame.columns))
    numeric += [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
                for c in frame.columns]

    def td(text, i, tag="td"):  # words may break (hyphenated) so that the table fits; numbers never do
        align, breaks = ("right", "") if numeric[i] and tag == "td" else ("left", "hyphens:auto;overflow-wrap:anywhere;")
        return (f'<{tag} style="text-align:{align};padding:0.15em 0.4em;white-space:normal;{breaks}'
                f'vertical-align:{"bottom" if tag == "th" else "top"}">{text}</{tag}>')
    body = "".join("<tr>" + "".join(td(c, i) for i, c in enumerate(cells)) + "</tr>" for cells in rows)
    thead = "<tr>" + "".join(td(html.escape(h), i, "th") for i, h in enumerate(head)) + "</tr>"
    note = f'<p style="font-size:0.9em;margin:0.3em 0 0">– {html.escape(missing)}</p>' if dashes else ""
    return (f'<figure class="book-table" id="{anchor}" style="margin:1em 0">'
            f'<figcaption><b>{html.escape(label)}.</b> {html.escape(caption)}</figcaption>'
            f'<div style="overflow-x:auto"><table lang="en" style="font-size:0.9em"><thead>{thead}</thead><tbody>{body}</tbody></table></div>'
            f"{note}</figure>")
