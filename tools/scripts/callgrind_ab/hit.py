#!/usr/bin/env python3
"""Send exactly N sequential GETs of PATH over one keep-alive connection; all must be 200.
usage: hit.py PORT N PATH [OUTFILE-for-last-body]"""
import http.client, sys
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
body = b""
for i in range(n):
    c.request("GET", path)
    r = c.getresponse(); body = r.read()
    if r.status != 200: sys.exit(f"request {i}: {r.status} {body[:300]!r}")
if len(sys.argv) > 4: open(sys.argv[4], "wb").write(body)
print("ok", n, len(body), "bytes/response")
