"""The web page and JSON API of `xalign serve` over one `Searcher`, served by waitress (threaded WSGI).

`GET /` the page; `GET /api/search?q=TEXT&k=K&target=images|captions` and `POST /api/search` (multipart: `image`
file, optional `k`, `target`) answer the list `Searcher.search_text/search_image` returns; `GET /image/<id>` the
file of an indexed gallery image, found by id only; `GET /api/info` the searcher's `describe()`.
Every error is JSON `{"error": MESSAGE}`: bad input 400, unknown id or route 404, wrong method 405, an upload over
`MAX_UPLOAD_BYTES` 413, anything unexpected 500 (logged with its traceback; the server keeps serving).
"""

import ipaddress
import logging
from importlib import resources

import flask
import waitress
from werkzeug.exceptions import HTTPException

from encoding.errors import BadInput
from pipeline.search.searcher import MAX_UPLOAD_BYTES, decode_image

log = logging.getLogger(f"xalign.{__name__}")

FORM_SLACK_BYTES = 64 * 1024  # multipart headers and the small form fields around the image file
BODY_LIMIT_BYTES = 4 * (MAX_UPLOAD_BYTES + FORM_SLACK_BYTES)  # waitress refuses (plain 413) before buffering more


def error(status: int, message: str) -> flask.Response:
    response = flask.jsonify(error=message)
    response.status_code = status
    return response


def parse_k(text: str | None) -> int:
    if text is None or text == "":
        return 10
    try:
        return int(text)
    except ValueError:
        raise BadInput(f"k '{text[:40]}': expected an integer") from None


def create_app(searcher) -> flask.Flask:
    """A Flask app answering queries through `searcher` (thread-safe; it serialises its own queries)."""
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES + FORM_SLACK_BYTES
    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/")
    def index():
        return flask.Response(page, mimetype="text/html")

    @app.get("/api/info")
    def info():
        return flask.jsonify(searcher.describe())

    @app.get("/api/search")
    def search_text():
        query = flask.request.args.get("q")
        if query is None:
            raise BadInput("missing query parameter 'q' (the text to search for)")
        args = flask.request.args
        return flask.jsonify(searcher.search_text(query, k=parse_k(args.get("k")), target=args.get("target", "images")))

    @app.post("/api/search")
    def search_image():
        upload = flask.request.files.get("image")
        if upload is None:
            raise BadInput("missing form field 'image' (an image file, sent as multipart/form-data)")
        data = upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return error(413, f"image '{upload.filename}': larger than {MAX_UPLOAD_BYTES} bytes")
        image = decode_image(data, upload.filename or "upload")
        form = flask.request.form
        return flask.jsonify(
            searcher.search_image(image, k=parse_k(form.get("k")), target=form.get("target", "images"))
        )

    @app.get("/image/<path:image_id>")
    def image(image_id: str):
        try:
            data, mimetype = searcher.image_file(image_id)
        except BadInput as err:
            return error(404, str(err))
        response = flask.Response(data, mimetype=mimetype)
        response.cache_control.max_age = 3600
        return response

    @app.errorhandler(BadInput)
    def bad_input(err: BadInput):
        return error(400, str(err))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        response = err.get_response()  # keeps headers such as 405's Allow
        response.set_data(flask.json.dumps({"error": err.description}))
        response.mimetype = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("%s %s failed", flask.request.method, flask.request.path)
        return error(500, f"internal error ({type(err).__name__}); the server logged the details")

    return app


def is_local(host: str) -> bool:
    """Whether `host` names a loopback address (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def urls(server) -> list[str]:
    """The `http://HOST:PORT/` addresses a waitress server listens on (one per socket)."""
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://{f'[{host}]' if ':' in host else host}:{port}/" for host, port in listen]


def serve(searcher, host: str, port: int, threads: int) -> None:
    """Serves `create_app(searcher)` on `host:port` with `threads` worker threads until interrupted.
    A port already in use is `BadInput` naming it."""
    try:
        server = waitress.create_server(
            create_app(searcher), host=host, port=port, threads=threads, max_request_body_size=BODY_LIMIT_BYTES
        )
    except (OSError, ValueError) as err:  # in use or not allowed (OSError); a host that does not resolve (ValueError)
        raise BadInput(
            f"--host {host} --port {port}: cannot listen there ({getattr(err, 'strerror', None) or err})"
        ) from None
    info = searcher.describe()
    log.info(
        "serving run %s (split %s, %d images) at %s", info["run"], info["split"], info["images"], " ".join(urls(server))
    )
    try:
        server.run()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.close()
