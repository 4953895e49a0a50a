"""Section references ("spec §N", "§N.M", "spec Appendix A") resolve to headings of docs/record.md,
and nothing points at the spec file outside the repository (issue 11)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "record.md"
SECTION = "\u00a7"  # the section sign, spelled out so this file holds no reference of its own
NUM = r"\d+(?:\.\d+)?"
REFERENCES = [
    re.compile(SECTION + rf"\s*({NUM})(?:\s*[-\u2013]\s*({NUM}))?"),  # §1.6, §1.6-1.7
    re.compile(rf"\bspec\s+({NUM})\b()"),  # "spec 1.3"
    re.compile(r"\bspec\s+(Appendix\s+[A-Z])\b()"),  # "spec Appendix A"
]
HEADING = re.compile(rf"^#{{2,4}}\s+(?:({NUM})\.?\s|(Appendix\s+[A-Z])\b)")
# Built from parts so that this file does not match itself.
FORBIDDEN = ("SEED_" + "STACK", "shared/" + "spec")


def headings() -> set[str]:
    found = set()
    for line in RECORD.read_text(encoding="utf-8").splitlines():
        m = HEADING.match(line)
        if m:
            found.add(m.group(1) or " ".join(m.group(2).split()))
    return found


def text_of(path: Path) -> str:
    """A file's text; for a notebook, its cells' sources (the JSON may escape the section sign)."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        cells = json.loads(raw).get("cells", [])
        return "\n".join("".join(c.get("source", [])) for c in cells)
    return raw


def referring_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "golf").rglob("*.py")), *sorted((ROOT / "params").glob("*.yaml")),
             *sorted((ROOT / "notebooks").glob("*.ipynb")), *sorted((ROOT / "tests").rglob("*.py")),
             *sorted((ROOT / "bench").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.md")),
             *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.is_file() and ".ipynb_checkpoints" not in f.parts]


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the venv
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if ".venv" not in p.parts]
    names.append("docs/record.md")  # checked even before it is committed
    paths = {ROOT / n for n in names}
    return sorted(p for p in paths if p.suffix in (".py", ".md", ".yaml", ".ipynb") and p.is_file())


def test_record_has_every_section():
    found = headings()
    wanted = {str(n) for n in range(10)} | {"Appendix A", "Appendix B"}
    wanted |= {f"9.{i}" for i in range(1, 21)}
    assert wanted <= found, f"docs/record.md lacks headings {sorted(wanted - found)}"


def test_every_section_reference_resolves():
    found = headings()
    unresolved = []
    for path in referring_files():
        for lineno, line in enumerate(text_of(path).splitlines(), 1):
            for pattern in REFERENCES:
                for m in pattern.finditer(line):
                    for ref in filter(None, m.groups()):
                        ref = " ".join(ref.split())
                        if ref not in found:
                            unresolved.append(f"{path.relative_to(ROOT)}:{lineno}: {ref!r} in {line.strip()[:100]!r}")
    assert not unresolved, "references with no heading in docs/record.md:\n" + "\n".join(unresolved)


def test_no_file_points_at_the_spec_outside_the_repo():
    hits = []
    for path in tracked_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(word in line for word in FORBIDDEN):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:100]}")
    assert not hits, "files still naming the spec outside the repo (use docs/record.md):\n" + "\n".join(hits)
