"""The nlp-corpus reader: order, filtering and errors on small hand-made folders, and the real package's shape."""

import json

import pytest

from prunekit.data import nlp_corpus, npm_package
from prunekit.errors import SourceError


def _write(folder, name, content):
    (folder / name).write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")


def test_sentences_in_numeric_file_order_filtered_and_deduplicated(tmp_path):
    _write(tmp_path, "doc-0.json", ["One two three  four\nfive six.", "Too short here.", "a b c d e"])
    _write(tmp_path, "doc-10.json", ["Ten comes after two in numbers."])
    _write(tmp_path, "doc-2.json", ["a   b c d e", "Two is the second file read."])
    _write(tmp_path, "notes.json", ["Not a corpus file, never read at all."])
    samples = nlp_corpus.load_sentences(tmp_path)
    # doc-0, doc-2, doc-10 (not doc-0, doc-10, doc-2); whitespace collapsed; < 5 words and repeats dropped
    assert samples.texts == ("One two three four five six.", "a b c d e", "Two is the second file read.",
                             "Ten comes after two in numbers.")
    assert samples.documents == ("nlp-corpus/doc-0", "nlp-corpus/doc-0", "nlp-corpus/doc-2", "nlp-corpus/doc-10")
    assert samples.labels is None and samples.name == "nlp-corpus"
    assert nlp_corpus.load_sentences(tmp_path, min_words=1, max_files=1).texts == (
        "One two three four five six.", "Too short here.", "a b c d e")


def test_missing_corpus_names_the_fetch_command(tmp_path):
    with pytest.raises(SourceError, match=r"python -m prunekit.data.nlp_corpus --fetch"):
        nlp_corpus.load_sentences(tmp_path)


@pytest.mark.parametrize("content, why", [("[\"cut off", "not valid JSON"), ({"a": 1}, "not a JSON list of sentences"),
                                          (["fine sentence with words", 3], "not a JSON list of sentences")])
def test_corrupt_file_is_named_with_the_fix(tmp_path, content, why):
    _write(tmp_path, "doc-0.json", content)
    with pytest.raises(SourceError, match=rf"doc-0.json is {why}.*fetch it again"):
        nlp_corpus.load_sentences(tmp_path)


def test_fetch_without_npm_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(npm_package.shutil, "which", lambda name: None)
    with pytest.raises(SourceError, match=r"npm is not installed.*nlp-corpus@4.4.0"):
        nlp_corpus.fetch(tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()


@pytest.mark.skipif(not nlp_corpus.available(), reason="nlp-corpus not fetched (scripts/setup.sh fetches it with npm)")
def test_real_corpus_holds_94k_distinct_sentences_in_100_files():
    samples = nlp_corpus.load_sentences()
    assert len(samples.texts) == 94_421 and len(set(samples.texts)) == len(samples.texts)
    assert len(set(samples.documents)) == 100
    assert min(len(t.split()) for t in samples.texts) == 5


def test_fetch_command_fails_in_one_line_without_npm(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(nlp_corpus.ENV_VAR, str(tmp_path / "corpus"))
    monkeypatch.setattr(npm_package.shutil, "which", lambda name: None)
    assert nlp_corpus.CORPUS.main(["--fetch"], "prunekit.data.nlp_corpus") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: nlp-corpus is not in {tmp_path / 'corpus'} and npm is not installed")
    assert nlp_corpus.CORPUS.main([], "prunekit.data.nlp_corpus") == 2
    assert "usage: python -m prunekit.data.nlp_corpus --fetch" in capsys.readouterr().err
