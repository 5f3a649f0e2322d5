#!/usr/bin/env python3
"""A tiny fake GitHub REST API on 127.0.0.1 for manual and CI checks.

Serves JSON for any GET with an ETag, answers 304 to a matching
If-None-Match, sends x-ratelimit-* headers, and counts requests
(GET /__count answers the count). Prints the port it bound on its first
line. Never reaches the internet.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = 0
LOCK = threading.Lock()


URL_FIELDS = (
    "forks keys collaborators teams hooks issue_events events assignees branches tags blobs "
    "git_tags git_refs trees statuses languages stargazers contributors subscribers subscription "
    "commits git_commits comments issue_comment contents compare merges archive downloads issues "
    "pulls milestones notifications labels releases deployments"
).split()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        global COUNT
        if self.path == "/__count":
            body = json.dumps({"requests": COUNT}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with LOCK:
            COUNT += 1
        path = self.path.split("?", 1)[0]
        etag = '"fake-%d"' % len(path)
        if self.headers.get("if-none-match") == etag:
            self.send_response(304)
            self.send_header("etag", etag)
            self.end_headers()
            return
        if path == "/user":
            doc = {"login": "fake-user"}
        elif path.endswith("/actions/runners"):
            doc = {"total_count": 1, "runners": [{"id": 1, "name": "r1", "status": "online"}]}
        else:
            # About the size and shape of a real repository answer (~6 KB,
            # its *_url fields absolute URLs under this API root, which a
            # proxy in front rewrites to its own base).
            base = "http://%s:%d%s" % (*self.server.server_address[:2], path)
            doc = {"path": path, "full_name": path.removeprefix("/repos/"), "url": base}
            for name in URL_FIELDS:
                doc[name + "_url"] = base + "/" + name
            doc["description"] = "x" * 3250
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("etag", etag)
        self.send_header("x-ratelimit-limit", "5000")
        self.send_header("x-ratelimit-remaining", str(5000 - COUNT))
        self.send_header("x-ratelimit-used", str(COUNT))
        self.send_header("x-ratelimit-reset", str(int(time.time()) + 3600))
        self.end_headers()
        self.wfile.write(body)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
