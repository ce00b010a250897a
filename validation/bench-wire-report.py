"""Tables for bench-wire.sh: wire bytes per step per node, and step times (see there)."""
import csv
import statistics
import sys

out, steps, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def wire(tag):
    with open(f"{out}/{tag}.wire.csv") as f:
        return {int(r["node"]): (int(r["tx_bytes"]), int(r["rx_bytes"])) for r in csv.DictReader(f)}


def metrics(tag):
    with open(f"{out}/{tag}.csv") as f:
        return list(csv.DictReader(f))


MiB = 1024.0 * 1024.0
print("\n## Wire bytes per step (eth0 of each node, difference of a 2-step and a %d-step run)\n" % steps)
print("| build | strategy | busiest link MiB/step | mean MiB/step (tx) | max/mean | counted per rank MiB/step (sum of groups) |")
print("| --- | --- | --- | --- | --- | --- |")
busiest = {}
for build in ("before", "after"):
    for s in ("zero3", "mics4h"):
        a, b = wire(f"bytes-{build}-{s}-2"), wire(f"bytes-{build}-{s}-{steps}")
        per = {n: ((b[n][0] - a[n][0]) / (steps - 2), (b[n][1] - a[n][1]) / (steps - 2)) for n in a}
        links = [v for n in per for v in per[n]]
        top = max(links)
        mean_tx = statistics.mean(v[0] for v in per.values())
        busiest[(build, s)] = top
        rows = metrics(f"bytes-{build}-{s}-{steps}")[1:]
        counted = statistics.mean(sum(float(r[k]) for k in r if k.endswith("_bytes")) for r in rows)
        print(f"| {build} | {s} | {top / MiB:.1f} | {mean_tx / MiB:.1f} | {top / mean_tx:.2f} | {counted / MiB:.1f} |")

print("\n## Step time (ms; median over rounds of each run's median timed step, [min-max])\n")
print("| rate | strategy | prefetch | before | after | after/before |")
print("| --- | --- | --- | --- | --- | --- |")
med = {}
for rate in ("200mbit", "1gbit"):
    for s in ("zero3", "mics4h"):
        for pf in ("true", "false"):
            cells = []
            for build in ("before", "after"):
                vals = []
                for r in range(1, repeat + 1):
                    rows = metrics(f"time-{build}-{s}-{pf}-{rate}-r{r}")[1:]
                    vals.append(statistics.median(float(x["step_ms"]) for x in rows))
                med[(rate, s, pf, build)] = statistics.median(vals)
                cells.append(f"{statistics.median(vals):.0f} [{min(vals):.0f}-{max(vals):.0f}]")
            ratio = med[(rate, s, pf, "after")] / med[(rate, s, pf, "before")]
            print(f"| {rate} | {s} | {pf} | {cells[0]} | {cells[1]} | {ratio:.2f} |")

print("\n## Ratios\n")
for rate in ("200mbit", "1gbit"):
    for s in ("zero3", "mics4h"):
        for build in ("before", "after"):
            on, off = med[(rate, s, "true", build)], med[(rate, s, "false", build)]
            print(f"- {rate} {s} {build}: prefetch on / off = {on / off:.2f}")
for s in ("zero3", "mics4h"):
    shrink = busiest[("before", s)] / busiest[("after", s)]
    for rate in ("200mbit", "1gbit"):
        speed = med[(rate, s, "true", "before")] / med[(rate, s, "true", "after")]
        print(f"- {s} {rate}: busiest link bytes shrink {shrink:.2f}x; step time (prefetch on) speed-up {speed:.2f}x")
