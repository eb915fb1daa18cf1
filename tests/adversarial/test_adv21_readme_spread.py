"""Issue 21: every headline ratio in the README names its command and prints its spread
(the median of alternated repeats in one run). Each bold ``**N x**`` ratio must carry a spread
(``spread a-b``, per-run or per-pair range) before the next bold figure."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_SPREAD = re.compile(r"spread|per run|per pair|\d[\d.]*\s*-\s*\d[\d.]*x|\d[\d.]*x? to \d[\d.]*x")


def _bold_ratios(text: str) -> list[tuple[str, str]]:
    found = list(re.finditer(r"\*\*([\d.,]+)x\*\*", text))
    out = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        out.append((m.group(1), text[m.end():min(end, m.end() + 300)]))
    return out


def test_every_bold_readme_ratio_prints_its_spread() -> None:
    ratios = _bold_ratios((REPO / "README.md").read_text())
    assert ratios, "no bold ratios found"
    bare = [value for value, after in ratios if not _SPREAD.search(after)]
    assert bare == [], f"headline ratios with no spread: {bare}"
