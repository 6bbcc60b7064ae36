"""Generated tables inside hand-written pages: each generator owns the text between
`<!-- name:start -->` and `<!-- name:end -->` of a page and leaves the rest alone."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: str | Path, name: str, text: str) -> None:
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path} has no {start} ... {end} markers: add them where the table goes")
    head, rest = doc.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{text.rstrip()}\n{end}{tail}")
    print(f"-> {path} ({name})")
