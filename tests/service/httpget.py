"""``python httpget.py URL [METHOD]``: one HTTP request, the answer as one JSON line (run inside a namespace)."""
from __future__ import annotations

import http.client
import json
import sys
import urllib.parse


def main() -> None:
    url = urllib.parse.urlsplit(sys.argv[1])
    method = sys.argv[2] if len(sys.argv) > 2 else "GET"
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    conn.request(method, url.path + (f"?{url.query}" if url.query else ""))
    resp = conn.getresponse()
    body = resp.read()
    print(json.dumps({"status": resp.status, "headers": dict(resp.getheaders()), "body": body.decode("utf-8", "replace")}))


if __name__ == "__main__":
    main()
