#!/usr/bin/env python3
"""The greedy/batched table of docs/DISPATCH-QUALITY.md from the summary.json files that
`replay_all.sh` wrote: one row per day and policy, then the goal's ratios per day.

usage: replay_table.py OUT_DIR"""
import json, os, sys

out = sys.argv[1]
rows = {}
for d in sorted(os.listdir(out)):
    path = os.path.join(out, d, "summary.json")
    if os.path.exists(path):
        s = json.load(open(path))
        rows[(s["instance"], s["policy"])] = s

print("| day | policy | delivered | click-to-door mean / p90 | ideal mean / p90 | excess mean / p90 "
      "| over 40 min (late at the ideal) | ready-to-pickup mean / p90 | utilisation "
      "| orders per courier-hour | compensation | offers refused (off-time) | conflicts |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (day, policy), s in sorted(rows.items()):
    m = s["measures"]
    f = lambda k: f"{m[k]['mean']:.2f} / {m[k]['p90']:.1f}"
    print(f"| {day} | {policy} | {s['delivered']} / {s['placed']} | {f('click_to_door')} "
          f"| {f('ideal_click_to_door')} | {f('excess')} "
          f"| {m['over_target']} ({m['over_target_at_ideal']}) | {f('ready_to_pickup')} "
          f"| {m['fleet_utilisation']:.3f} | {m['orders_per_courier_hour']:.3f} "
          f"| {m['total_compensation']:,.2f} | {s['offers']['refused_off_time']} "
          f"| {int(s['service'].get('match_conflicts', 0))} |")

print()
print("| day | excess mean: greedy → batched (change) | over 40 min: greedy → batched (change) "
      "| over 40 min beyond the ideal's: greedy → batched | largest cut of over 40 min possible "
      "| delivered: greedy → batched |")
print("|---|---:|---:|---:|---:|---:|")
cuts, target_cuts, ceilings = [], [], []
for day in sorted({d for d, _ in rows}):
    g, b = rows.get((day, "greedy")), rows.get((day, "batched"))
    if not (g and b):
        continue
    ge, be = g["measures"]["excess"]["mean"], b["measures"]["excess"]["mean"]
    go, bo = g["measures"]["over_target"], b["measures"]["over_target"]
    ideal = g["measures"]["over_target_at_ideal"]
    cut = 1 - be / ge if ge else 0.0
    tcut = 1 - bo / go if go else 0.0
    # Batched cannot do better than its own orders that are late even at the ideal.
    ceiling = 1 - b["measures"]["over_target_at_ideal"] / go if go else 0.0
    cuts.append(cut)
    target_cuts.append(tcut)
    ceilings.append(ceiling)
    print(f"| {day} | {ge:.2f} → {be:.2f} ({-cut:+.0%}) | {go} → {bo} ({-tcut:+.0%}) "
          f"| {go - ideal} → {bo - b['measures']['over_target_at_ideal']} | {ceiling:.0%} "
          f"| {g['delivered']} → {b['delivered']} |")
if cuts:
    print()
    print(f"Mean excess cut averaged over {len(cuts)} days: {sum(cuts) / len(cuts):.0%} "
          f"(days with a cut of at least 40 %: {sum(c >= 0.4 for c in cuts)}); orders over the "
          f"target cut by {sum(target_cuts) / len(target_cuts):.0%} on average, of at most "
          f"{sum(ceilings) / len(ceilings):.0%} (every order at its ideal).")
