#!/usr/bin/env python3
"""rank_cost.py - Redis time of candidate-ranking variants on a 1M-member score set.

Usage: bench/rank_cost.py PORT   (a redis-server you own on 127.0.0.1:PORT; the script writes
the keys `scores` and `tmp:*` there and deletes the `tmp:*` keys it leaves)

For 3,000 rankings of 20 random drivers each, sent as one pipeline, it prints the Redis main
thread's CPU time (INFO cpu, user + sys) per ranking for:
  multi    MULTI, ZADD tmp, ZINTERSTORE tmp tmp scores WEIGHTS 1 w, ZADD tmp NX, ZREVRANGE
           WITHSCORES, ZMSCORE scores, DEL tmp, EXEC  (what GET /v1/candidates sends)
  lean     MULTI, ZADD, ZINTERSTORE, ZADD NX, ZPOPMAX, EXEC  (no ZMSCORE, no DEL)
  zmscore  ZMSCORE scores <20 ids> alone
No client library needed (raw RESP over a socket).
"""
import random
import socket
import sys
import time


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    port = int(sys.argv[1])
    s = socket.create_connection(("127.0.0.1", port))

    def call(*a):
        s.sendall(resp(*a))
        time.sleep(0.05)
        return s.recv(1 << 20)

    def cpu():
        text = call("INFO", "cpu").decode()
        total = 0.0
        for line in text.split("\r\n"):
            if line.startswith(("used_cpu_sys_main_thread", "used_cpu_user_main_thread")):
                total += float(line.split(":")[1])
        return total

    if b":1000000" not in call("ZCARD", "scores"):
        s.settimeout(120)
        call("EVAL", "for i=0,999999 do redis.call('ZADD', KEYS[1], 3.5 + (i % 1500)/1000, "
             "string.format('d%07d', i)) end return 1", 1, "scores")
    n = 3000
    for variant in ("multi", "lean", "zmscore"):
        random.seed(1)
        reqs = []
        for k in range(n):
            ids = ["d%07d" % random.randrange(1000000) for _ in range(20)]
            pairs = []
            for i in ids:
                pairs += [-random.randrange(1000, 200000), i]
            t = "tmp:%d" % k
            head = [resp("ZADD", t, *pairs),
                    resp("ZINTERSTORE", t, 2, t, "scores", "WEIGHTS", 1, 1000000),
                    resp("ZADD", t, "NX", *pairs)]
            if variant == "multi":
                reqs += [resp("MULTI"), *head, resp("ZREVRANGE", t, 0, 19, "WITHSCORES"),
                         resp("ZMSCORE", "scores", *ids), resp("DEL", t), resp("EXEC")]
            elif variant == "lean":
                reqs += [resp("MULTI"), *head, resp("ZPOPMAX", t, 20), resp("EXEC")]
            else:
                reqs.append(resp("ZMSCORE", "scores", *ids))
        c0 = cpu()
        s.settimeout(3)
        s.sendall(b"".join(reqs))
        try:
            while s.recv(1 << 22):
                pass
        except socket.timeout:
            pass
        c1 = cpu()
        print(f"{variant}: {(c1 - c0) / n * 1e6:.1f} us of Redis time per ranking")


if __name__ == "__main__":
    main()
