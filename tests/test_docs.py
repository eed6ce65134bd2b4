"""docs/method.md has every section the code, the params files and the README cite as "method.md §N"."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

# A section number: 3, 3.2, 9.13 (a trailing full stop ends the sentence, not the number).
_NUM = r"\d+(?:\.\d+)*"
# One citation group: §a, §b–§c, §d-e ... (further items after a comma need their own §).
_GROUP = rf"§{_NUM}(?:\s*[–-]\s*§?{_NUM}|\s*,\s*§{_NUM})*"
# "method.md §…", also as the Markdown link "[method.md](docs/method.md) §…".
_EXPLICIT = re.compile(rf"method\.md[\])]*\s+({_GROUP})")
# A bare group, with the name of another document right before it when it has one (ecosystem.md §7).
_BARE = re.compile(rf"(?:([\w-]+\.md)[\])]*,?\s+)?({_GROUP})(\s+of the paper)?")
# Sections cited by name: method.md, "Monodepth2 essentials" / (Monodepth2 essentials, method.md).
_NAMED = (re.compile(r'method\.md,\s+"?([A-Z][A-Za-z0-9]*(?: [A-Za-z0-9]+)*)'),
          re.compile(r"\(([A-Z][A-Za-z0-9]*(?: [A-Za-z0-9]+)*), method\.md\)"))


def _expand(group: str) -> list[str]:
    """Section numbers of one citation group; a range a–b between siblings lists every section in it."""
    out: list[str] = []
    for item in re.split(r"\s*,\s*", group):
        ends = [e.strip().lstrip("§") for e in re.split(r"[–-]", item)]
        if len(ends) == 2:
            a, b = ends
            pa, pb = a.split("."), b.split(".")
            if len(pa) == len(pb) and pa[:-1] == pb[:-1]:
                out += [".".join(pa[:-1] + [str(k)]) for k in range(int(pa[-1]), int(pb[-1]) + 1)]
                continue
        out += ends
    return out


def _cited_files(include_readme: bool = True) -> list[Path]:
    files = sorted((ROOT / "corda").rglob("*.py")) + sorted((ROOT / "stages").rglob("*.py"))
    files += sorted(ROOT.glob("params*.yaml")) + sorted((ROOT / "params").glob("*.yaml"))
    if include_readme:
        files.append(ROOT / "README.md")
    return files


def _flat(path: Path) -> str:
    """The file's text on one line: docstrings wrap citations across lines."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".yaml":  # a YAML comment continues on the next line after its '#'
        text = re.sub(r"\n\s*#", "\n", text)
    return re.sub(r"\s+", " ", text)


def explicit_citations() -> dict[str, set[str]]:
    """Section number → files citing it as "method.md §N"."""
    cited: dict[str, set[str]] = {}
    for path in _cited_files():
        for m in _EXPLICIT.finditer(_flat(path)):
            for num in _expand(m.group(1)):
                cited.setdefault(num, set()).add(str(path.relative_to(ROOT)))
    return cited


def _in_paper_citation(text: str, at: int) -> bool:
    """Whether position ``at`` sits in a parenthesis that cites another paper (``et al., <venue> <year>``)."""
    opening = text.rfind("(", 0, at)
    return opening >= 0 and ")" not in text[opening:at] and bool(
        re.search(r"et al\.,[^()]*\b(19|20)\d\d\b", text[opening:at]))


def bare_citations() -> dict[str, set[str]]:
    """Section number → files in corda/ and stages/ citing a bare "§N" that means method.md.

    A group right after another document's name (``ecosystem.md §7``, ``style.md §8``), followed by
    "of the paper", or inside a citation of another paper ("(Hoyer et al., CVPR 2022, §3.2–§3.4)") refers
    elsewhere and is skipped.
    """
    cited: dict[str, set[str]] = {}
    for path in sorted((ROOT / "corda").rglob("*.py")) + sorted((ROOT / "stages").rglob("*.py")):
        for m in _BARE.finditer(_flat(path)):
            doc, group, paper = m.groups()
            if (doc and doc != "method.md") or paper or _in_paper_citation(m.string, m.start()):
                continue
            for num in _expand(group):
                cited.setdefault(num, set()).add(str(path.relative_to(ROOT)))
    return cited


def named_citations() -> dict[str, set[str]]:
    cited: dict[str, set[str]] = {}
    for path in _cited_files():
        text = _flat(path)
        for pattern in _NAMED:
            for m in pattern.finditer(text):
                cited.setdefault(m.group(1), set()).add(str(path.relative_to(ROOT)))
    return cited


def headings(text: str) -> tuple[set[str], set[str]]:
    """(section numbers, heading titles) of a Markdown document; "### 9.6 BatchNorm" anchors 9.6."""
    numbers, titles = set(), set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t]*$", text, flags=re.M):
        title = m.group(1)
        titles.add(title)
        n = re.match(rf"§?({_NUM})\.?(?:\s|$)", title)
        if n:
            numbers.add(n.group(1))
    return numbers, titles


def _missing(cited: dict[str, set[str]], numbers: set[str]) -> dict[str, list[str]]:
    return {num: sorted(files) for num, files in sorted(cited.items()) if num not in numbers}


def test_citation_parser_reads_ranges_lists_and_links():
    assert _expand("§1.2–§1.6") == ["1.2", "1.3", "1.4", "1.5", "1.6"]
    assert _expand("§2, §5–§7") == ["2", "5", "6", "7"]
    assert _expand("§3.2–3.3, §4") == ["3.2", "3.3", "4"]
    assert _expand("§2-§5") == ["2", "3", "4", "5"]
    assert _expand("§1–§3.4") == ["1", "3.4"]  # not siblings: the ends only
    text = "see [method.md](docs/method.md) §5, §8. Also method.md §6."
    found = [m.group(1) for m in _EXPLICIT.finditer(text)]
    assert found == ["§5, §8", "§6"]
    skipped = [(m.group(1), m.group(3)) for m in _BARE.finditer("(ecosystem.md §11) and §3.3 of the paper")]
    assert skipped == [("ecosystem.md", None), (None, " of the paper")]


def test_the_code_cites_method_md():
    """Guards the scan itself: a broken file glob or regex would make the checks below pass vacuously."""
    cited = explicit_citations()
    assert {"1.1", "2.2", "3.2", "4", "5", "6", "8"} <= set(cited)
    assert any(f.startswith("params/") for files in cited.values() for f in files)
    assert "README.md" in set().union(*cited.values())
    assert {"3.4", "3.9", "9.2", "9.6", "9.13"} <= set(bare_citations())
    assert "Monodepth2 essentials" in named_citations()


@pytest.mark.parametrize("kind", ["explicit", "bare"])
def test_every_cited_section_exists_in_docs_method_md(kind):
    numbers, _ = headings(METHOD.read_text(encoding="utf-8"))
    cited = explicit_citations() if kind == "explicit" else bare_citations()
    missing = _missing(cited, numbers)
    assert not missing, f"docs/method.md lacks these cited sections (section: citing files): {missing}"


def test_every_section_cited_by_name_exists_in_docs_method_md():
    _, titles = headings(METHOD.read_text(encoding="utf-8"))
    missing = {name: sorted(files) for name, files in named_citations().items() if name not in titles}
    assert not missing, f"docs/method.md lacks these headings cited by name: {missing}"


def test_a_deleted_section_is_reported():
    """The check reads headings: without "### 9.6 ..." the section counts as missing."""
    text = METHOD.read_text(encoding="utf-8")
    numbers, _ = headings(re.sub(r"^### 9\.6 .*$", "", text, flags=re.M))
    assert "9.6" not in numbers
    assert "9.6" in _missing(bare_citations(), numbers)


def test_citations_of_other_papers_are_not_method_md_sections():
    text = "recipe (Hoyer et al., CVPR 2022, §3.2–§3.4, §4.1) and the mix (§3.5)"
    found = [m.group(2) for m in _BARE.finditer(text) if not _in_paper_citation(text, m.start())]
    assert found == ["§3.5"]
