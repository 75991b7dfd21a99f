"""Test helpers shared by several test modules (and tests/faults.py): not part of the package."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

POOLED_SIDE = 8  # images are averaged down to 8x8 before the projection


class PixelBackbone:
    """A stand-in for Inception with the Backbone interface: a fixed random projection of
    8x8-pooled pixels. Fast on CPU and deterministic, so FID/KID runs in tests cost nothing.

    Takes NHWC images like the real backbones: uint8, or float in [-1, 1]; 1 channel (repeated to
    RGB, as `to_pixels` does) or 3; any side that is a multiple of 8.
    """

    name = variant = "pixels"
    feature_dim = 16

    def __init__(self):
        inputs = POOLED_SIDE * POOLED_SIDE * 3
        self.projection = np.random.default_rng(0).standard_normal((inputs, self.feature_dim))

    def features(self, images):
        x = np.asarray(images)
        x = x.astype(np.float32) / 127.5 - 1.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
        n, h, w, c = x.shape
        s = POOLED_SIDE
        pooled = x.reshape(n, s, h // s, s, w // s, c).mean(axis=(2, 4)).reshape(n, -1)
        return pooled @ self.projection


class LoopbackServer:
    """Serves `files` (path -> bytes) with Range support and scripted misbehaviour."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_once: set[str] = set()  # first full response: send half, then close
        self.ignore_range: set[str] = set()
        self.errors: dict[str, int] = {}
        self.redirects: dict[str, str] = {}  # like the Hub's resolve/ URLs -> CDN
        self.requests: list[tuple[str, str | None, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):  # noqa: N802 (http.server API)
                path = self.path
                server.requests.append((path, self.headers.get("Range"),
                                        self.headers.get("User-Agent")))
                if path in server.errors:
                    self.send_error(server.errors[path])
                    return
                if path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and path not in server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in server.cut_once:
                    server.cut_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.deadline = threading.Timer(60.0, self.httpd.shutdown)  # stops by itself
        self.deadline.daemon = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def paths_requested(self) -> list[str]:
        return [p for p, _, _ in self.requests]

    def start(self):
        self.thread.start()
        self.deadline.start()
        return self

    def stop(self):
        self.deadline.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
