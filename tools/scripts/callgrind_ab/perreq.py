#!/usr/bin/env python3
"""Per-request instructions from callgrind pairs: total Ir and request-path Ir (inclusive Ir of the
actix h1 Dispatcher future + the redis multiplexed-connection driver task), (X(600)-X(200))/400."""
import re, subprocess, glob, os, sys
OUT = sys.argv[1]
PATTERNS = {
    'http': r'<actix_http::h1::dispatcher::Dispatcher<T,S,B,X,U> as core::future::future::Future>::poll \[',
    'redis': r'<futures_util::stream::stream::forward::Forward<St,Si,Item> as core::future::future::Future>::poll \[',
}
cache = {}
def measure(f):
    if f in cache: return cache[f]
    out = subprocess.run(['callgrind_annotate', '--inclusive=yes', '--threshold=100', '--auto=no', f],
                         capture_output=True, text=True).stdout
    r = {'total': None}
    for line in out.splitlines():
        m = re.match(r'\s*([\d,]+) \([^)]*\)\s+(.*)$', line)
        if not m: continue
        v = int(m.group(1).replace(',', ''))
        if 'PROGRAM TOTALS' in m.group(2): r['total'] = v
        for k, p in PATTERNS.items():
            if re.search(p, m.group(2)) and k not in r: r[k] = v
    r['path'] = r.get('http', 0) + r.get('redis', 0)
    cache[f] = r
    return r
print(f"{'build':5} {'endpoint':7} {'rep':3} {'total/req':>10} {'path/req':>10} {'http/req':>10} {'redis/req':>10}")
for b in ['old', 'new']:
    for k in ['nearby', 'cand']:
        for rep in ['a', 'b']:
            lo, hi = f'{OUT}/cg-{b}-{k}-200{rep}.out', f'{OUT}/cg-{b}-{k}-600{rep}.out'
            if not (os.path.exists(lo) and os.path.exists(hi)): continue
            L, H = measure(lo), measure(hi)
            d = {x: (H[x] - L[x]) / 400 for x in ['total', 'path', 'http', 'redis']}
            print(f"{b:5} {k:7} {rep:3} {d['total']:>10,.0f} {d['path']:>10,.0f} {d['http']:>10,.0f} {d['redis']:>10,.0f}")
