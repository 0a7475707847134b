"""A Flask app on a real waitress server on a free local port, in a background thread, for the HTTP tests."""

import contextlib
import threading

import waitress


@contextlib.contextmanager
def serving(app):
    """Yields the server's base URL (`http://127.0.0.1:PORT`); closes the server and joins its thread after."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.trigger.pull_trigger(server.close)  # closed in the server's own thread, so its loop ends cleanly
        thread.join(timeout=10)
        server.task_dispatcher.shutdown()
        assert not thread.is_alive(), "the server thread did not stop"
