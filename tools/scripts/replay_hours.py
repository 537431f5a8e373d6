#!/usr/bin/env python3
"""Where a replayed day's excess click-to-door comes from, hour by hour.

Usage: tools/scripts/replay_hours.py MDRP_DAY_DIR REPLAY_OUT_DIR [REPLAY_OUT_DIR...]

For each hour of placement: the orders placed, the couriers on duty (average over the hour's
minutes), orders per courier, and for each replay (a `replay mdrp --out` directory, e.g. one per
policy) the orders delivered and their excess click-to-door (pickup - ready, in minutes: with
one order per instruction the excess is the ready-to-pickup time), total and mean. Prints a
markdown table.
"""
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    day = Path(sys.argv[1])
    outs = [Path(p) for p in sys.argv[2:]]
    orders = {o["order"]: o for o in rows(day / "orders.txt")}
    couriers = rows(day / "couriers.txt")
    hour_of = lambda minute: int(minute // 60)
    placed = defaultdict(int)
    for o in orders.values():
        placed[hour_of(float(o["placement_time"]))] += 1
    hours = sorted(placed)
    on_duty = {}
    for h in hours:
        minutes = range(h * 60, h * 60 + 60)
        on_duty[h] = sum(
            sum(1 for c in couriers if float(c["on_time"]) <= m < float(c["off_time"]))
            for m in minutes
        ) / 60.0
    excess = []
    for out in outs:
        by_hour = defaultdict(list)
        with open(out / "solution_info_orders.txt") as f:
            next(f)
            for line in f:
                p = line.split()
                if len(p) < 9:
                    continue
                o = orders.get(p[0])
                if o is None:
                    continue
                by_hour[hour_of(float(o["placement_time"]))].append(float(p[6]) - float(p[5]))
        excess.append(by_hour)
    head = "| hour | placed | couriers on duty | orders per courier |"
    rule = "|---:|---:|---:|---:|"
    for out in outs:
        head += f" {out.name}: delivered / excess total / mean |"
        rule += "---:|"
    print(head)
    print(rule)
    totals = [[0, 0.0] for _ in outs]
    for h in hours:
        line = f"| {h} | {placed[h]} | {on_duty[h]:.1f} | "
        line += f"{placed[h] / on_duty[h]:.2f} |" if on_duty[h] > 0 else "∞ |"
        for k, by_hour in enumerate(excess):
            e = by_hour.get(h, [])
            totals[k][0] += len(e)
            totals[k][1] += sum(e)
            mean = sum(e) / len(e) if e else math.nan
            line += f" {len(e)} / {sum(e):.0f} / {mean:.2f} |"
        print(line)
    line = f"| all | {sum(placed.values())} | | |"
    for n, t in totals:
        line += f" {n} / {t:.0f} / {t / n if n else math.nan:.2f} |"
    print(line)


if __name__ == "__main__":
    main()
