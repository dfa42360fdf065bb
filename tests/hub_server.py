"""A local HTTP server that answers as the Hugging Face hub does for what huggingface_hub's downloads
ask (HF_ENDPOINT points at it): file metadata and bytes at /{repo}/resolve/{revision}/{file}, the file
listing at /api/models/{repo}/tree/{revision}, and the hub's 404s (X-Error-Code RepoNotFound /
EntryNotFound). Loopback only; every request is recorded."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repos: dict[str, dict[str, Path]]):
        self.repos = {repo: {name: Path(p) for name, p in files.items()} for repo, files in repos.items()}
        self.sha256 = {
            p: hashlib.sha256(p.read_bytes()).hexdigest() for files in self.repos.values() for p in files.values()
        }
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _error(self, code: int, error_code: str, message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _route(self):
                hub.requests.append((self.command, self.path))
                path = self.path.split("?", 1)[0]
                tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                match = tree or resolve
                if match is None:
                    return self._error(404, "EntryNotFound", f"no route {path}")
                files = hub.repos.get(match.group(1))
                if files is None:
                    return self._error(404, "RepoNotFound", f"Repository {match.group(1)} not found")
                if tree:
                    listing = [
                        {"type": "file", "path": name, "size": p.stat().st_size, "oid": hub.sha256[p][:40]}
                        for name, p in sorted(files.items())
                    ]
                    body = json.dumps(listing).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    return self.wfile.write(body)
                file = files.get(match.group(3))
                if file is None:
                    return self._error(404, "EntryNotFound", f"{match.group(3)} does not exist")
                data = file.read_bytes()
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
                if ranged:
                    start = int(ranged.group(1))
                self.send_response(206 if ranged else 200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub.sha256[file]}"')
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(data[start:])

            do_GET = _route
            do_HEAD = _route

        return Handler
