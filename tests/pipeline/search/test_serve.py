"""`xalign serve`: the app on a real waitress server, queried over HTTP, answers what the searcher and
`xalign search --json` answer; every bad request gets its 4xx (or 500) with a JSON message and the server keeps
serving; images are served by gallery id only."""

import json
import logging
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import waitress

from encoding.errors import BadInput
from pipeline.search.searcher import MAX_QUERY_CHARS, MAX_UPLOAD_BYTES, Searcher, decode_image
from pipeline.search.server import create_app, is_local, urls
from tests.pipeline.search.served import serving


@pytest.fixture(scope="module")
def searcher(searchable_run):
    return Searcher.open(searchable_run, split="test", device="cpu")


@pytest.fixture(scope="module")
def base(searcher):
    with serving(create_app(searcher)) as url:
        yield url


def request(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, headers, body bytes) of one request; 4xx/5xx answers are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def get_json(url: str):
    status, headers, body = request(url)
    assert headers["Content-Type"] == "application/json", body[:200]
    return status, json.loads(body)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    """A multipart/form-data body and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (filename, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_json(url: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]]):
    body, headers = multipart(fields, files)
    status, response_headers, answer = request(url, data=body, headers=headers)
    assert response_headers["Content-Type"] == "application/json", answer[:200]
    return status, json.loads(answer)


def as_json(rows):
    return json.loads(json.dumps(rows))


def first_image(searcher) -> tuple[str, bytes]:
    row = searcher.search_text("a digit", k=1)[0]
    return row["id"], Path(searcher.image_path(row["id"])).read_bytes()


def assert_still_serving(base: str, searcher) -> None:
    assert get_json(f"{base}/api/info") == (200, as_json(searcher.describe()))


@pytest.mark.parametrize("target", ["images", "captions"])
def test_get_search_answers_search_text(base, searcher, target):
    query = urllib.parse.urlencode({"q": "a big red seven", "k": 5, "target": target})
    status, rows = get_json(f"{base}/api/search?{query}")
    assert status == 200
    assert rows == as_json(searcher.search_text("a big red seven", k=5, target=target))
    assert [row["rank"] for row in rows] == [1, 2, 3, 4, 5]


def test_get_search_answers_the_cli_json(base, searchable_run, capsys):
    from pipeline.commands import search

    assert search.main([str(searchable_run), "a small blue three", "-k", "4", "--json"]) == 0
    cli_rows = json.loads(capsys.readouterr().out)
    status, rows = get_json(f"{base}/api/search?{urllib.parse.urlencode({'q': 'a small blue three', 'k': 4})}")
    assert (status, rows) == (200, cli_rows)


def test_post_search_answers_search_image(base, searcher):
    image_id, data = first_image(searcher)
    status, rows = post_json(f"{base}/api/search", {"k": "3", "target": "images"}, {"image": ("query.png", data)})
    assert status == 200
    assert rows == as_json(searcher.search_image(decode_image(data, "query.png"), k=3))


def test_info_and_page(base, searcher):
    assert get_json(f"{base}/api/info") == (200, as_json(searcher.describe()))
    status, headers, body = request(f"{base}/")
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    assert b'id="results"' in body


def test_image_by_id_is_the_gallery_file(base, searcher):
    image_id, data = first_image(searcher)
    status, headers, body = request(f"{base}/image/{urllib.parse.quote(image_id)}")
    assert (status, headers["Content-Type"], body) == (200, "image/png", data)


@pytest.mark.parametrize("image_id", ["no-such-image", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"])
def test_image_outside_the_gallery_is_404(base, searcher, image_id):
    status, headers, body = request(f"{base}/image/{image_id}")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]
    assert_still_serving(base, searcher)


def bad_get_queries(gallery_size: int) -> list[tuple[dict, str]]:
    return [
        ({}, "'q'"),
        ({"q": ""}, ""),
        ({"q": "   "}, ""),
        ({"q": "x" * 100_000}, ""),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, ""),
        ({"q": "a seven", "k": "ten"}, "k 'ten'"),
        ({"q": "a seven", "k": "0"}, ""),
        ({"q": "a seven", "k": "-3"}, ""),
        ({"q": "a seven", "k": str(gallery_size + 1)}, ""),
        ({"q": "a seven", "target": "faces"}, ""),
    ]


def test_bad_get_queries_are_400_and_the_server_keeps_serving(base, searcher):
    for params, named in bad_get_queries(searcher.describe()["images"]):
        status, answer = get_json(f"{base}/api/search?{urllib.parse.urlencode(params)}")
        assert status == 400, params
        assert named in answer["error"] and answer["error"], (params, answer)
        assert_still_serving(base, searcher)


def test_bad_uploads_are_4xx_and_the_server_keeps_serving(base, searcher):
    _, png = first_image(searcher)
    cases = [
        ({"k": "3"}, {}, 400),  # no image field
        ({}, {"image": ("notes.txt", b"not an image at all")}, 400),
        ({}, {"image": ("empty.png", b"")}, 400),
        ({}, {"image": ("cut.png", png[: len(png) // 2])}, 400),
        ({"k": "many"}, {"image": ("query.png", png)}, 400),
        ({"target": "faces"}, {"image": ("query.png", png)}, 400),
        ({}, {"image": ("huge.png", b"\0" * (MAX_UPLOAD_BYTES + 1))}, 413),
    ]
    for fields, files, expected in cases:
        status, answer = post_json(f"{base}/api/search", fields, files)
        assert status == expected and answer["error"], (fields, list(files), status, answer)
        assert_still_serving(base, searcher)


def test_unknown_route_and_wrong_method_are_json(base, searcher):
    status, headers, body = request(f"{base}/api/nothing")
    assert (status, headers["Content-Type"]) == (404, "application/json") and json.loads(body)["error"]
    status, headers, body = request(f"{base}/api/search", method="DELETE")
    assert (status, headers["Content-Type"]) == (405, "application/json") and json.loads(body)["error"]
    assert set(headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert_still_serving(base, searcher)


class Failing:
    """A searcher whose text search fails unexpectedly."""

    def search_text(self, query, k=10, target="images"):
        raise RuntimeError("index file vanished")

    def describe(self):
        return {"run": "x"}


def test_unexpected_error_is_500_logged_and_the_server_keeps_serving(caplog):
    with serving(create_app(Failing())) as url, caplog.at_level(logging.ERROR):
        status, answer = get_json(f"{url}/api/search?q=seven")
        assert status == 500 and "RuntimeError" in answer["error"]
        assert "index file vanished" not in answer["error"]  # the details stay in the log
        assert get_json(f"{url}/api/info") == (200, {"run": "x"})
    record = next(r for r in caplog.records if r.name == "xalign.pipeline.search.server")
    assert record.exc_info and "index file vanished" in str(record.exc_info[1])


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_local(host, local):
    assert is_local(host) is local


def test_urls_name_the_listening_socket():
    server = waitress.create_server(create_app(Failing()), host="127.0.0.1", port=0)
    try:
        assert urls(server) == [f"http://127.0.0.1:{server.effective_port}/"]
    finally:
        server.close()


def test_serve_cli_warns_for_a_network_host_and_names_a_port_in_use(searchable_run, caplog):
    from pipeline.commands import serve

    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadInput, match=f"--port {port}"):
            serve.main([str(searchable_run), "--host", "0.0.0.0", "--port", str(port), "--device", "cpu"])
    assert any("reachable from the network" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_serve_cli_names_a_host_that_does_not_resolve(searchable_run):
    from pipeline.commands import serve

    with pytest.raises(BadInput, match="--host no.such.host.invalid --port 8799: cannot listen there"):
        serve.main([str(searchable_run), "--host", "no.such.host.invalid", "--port", "8799", "--device", "cpu"])


def test_serve_cli_refuses_zero_threads(searchable_run):
    from pipeline.commands import serve

    with pytest.raises(BadInput, match="--threads 0"):
        serve.main([str(searchable_run), "--threads", "0"])
