"""The search page in a real browser: headless Chromium opens `/?q=...&k=...` on a real server, the page's script
runs the query through the JSON API, and the rendered DOM holds the k result cards the searcher ranks."""

import shutil
import subprocess
import urllib.parse
from html.parser import HTMLParser

import pytest

from pipeline.search.searcher import Searcher
from pipeline.search.server import create_app
from tests.pipeline.search.served import serving

pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)"
)


class Cards(HTMLParser):
    """The result cards of a rendered page: [{"id", "rank", "score", "caption", "src"}] in document order."""

    def __init__(self):
        super().__init__()
        self.cards, self.field, self.error = [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "li" and "card" in classes:
            self.cards.append({"id": attrs["data-id"], "rank": int(attrs["data-rank"])})
        elif tag == "img" and self.cards and "src" not in self.cards[-1]:
            self.cards[-1]["src"] = attrs.get("src")
        elif {"score", "caption"} & set(classes) and self.cards:
            self.field = ({"score", "caption"} & set(classes)).pop()
        elif attrs.get("id") == "error" and "hidden" not in attrs:
            self.field = "error"

    def handle_data(self, data):
        if self.field == "error":
            self.error = data
        elif self.field:
            self.cards[-1][self.field] = data
        self.field = None


def rendered(url: str) -> Cards:
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    done = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    cards = Cards()
    cards.feed(done.stdout)
    return cards


@pytest.fixture(scope="module")
def searcher(searchable_run):
    return Searcher.open(searchable_run, split="test", device="cpu")


@pytest.mark.parametrize("target", ["images", "captions"])
def test_page_runs_the_query_of_its_url_and_renders_the_ranked_cards(searcher, target):
    expected = searcher.search_text("a digit", k=5, target=target)
    with serving(create_app(searcher)) as base:
        page = rendered(f"{base}/?{urllib.parse.urlencode({'q': 'a digit', 'k': 5, 'target': target})}")
    assert page.error is None
    assert [(card["rank"], card["id"], card["score"]) for card in page.cards] == [
        (row["rank"], row["id"], f"{row['score']:.3f}") for row in expected
    ]
    assert [card["caption"] for card in page.cards] == [row["captions"][0] for row in expected]
    assert [card["src"] for card in page.cards] == [
        f"/image/{urllib.parse.quote(row['id'], safe='')}" for row in expected
    ]


def test_page_shows_the_api_error_of_a_bad_query(searcher):
    with serving(create_app(searcher)) as base:
        page = rendered(f"{base}/?q=a+digit&k=0")
    assert page.cards == []
    assert page.error and page.error.startswith("k 0: expected 1 to")
