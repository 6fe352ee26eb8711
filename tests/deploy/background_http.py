"""Serve an http.server in a daemon thread, and stop it: the fakes' and the token server's one way."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


def serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def shutdown(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
