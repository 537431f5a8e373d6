#!/usr/bin/env python3
"""Load N drivers in Paris (seeded RNG, identical for every build) and score each one.
usage: load.py PORT [N]"""
import http.client, json, random, sys, time
port = int(sys.argv[1]); n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
rng = random.Random(42)
vt = ["bike", "scooter", "car", "van"]
now = int(time.time() * 1000)
drivers = [(f"drv-{i}", 48.85 + rng.uniform(-0.1, 0.1), 2.35 + rng.uniform(-0.15, 0.15), vt[i % 4],
            round(3.5 + rng.random() * 1.5, 3)) for i in range(n)]
c = http.client.HTTPConnection("127.0.0.1", port)
def req(method, path, body):
    for attempt in range(20):
        c.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse(); data = r.read()
        if r.status == 503: time.sleep(0.2); continue
        if r.status != 200: sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data)
    sys.exit("503 forever")
accepted = 0
for b in range(0, n, 1000):
    pos = [{"driver_id": d, "lat": round(la, 7), "lon": round(lo, 7), "recorded_at": now, "vehicle_type": v}
           for d, la, lo, v, _ in drivers[b:b + 1000]]
    res = req("POST", "/v1/locations/batch", {"positions": pos})
    accepted += sum(1 for x in res["results"] if x["status"] == "accepted")
print("accepted", accepted, "of", n)
for d, _, _, _, s in drivers:
    req("PUT", f"/v1/drivers/{d}/score", {"score": s, "mode": "set"})
print("scored", n)
