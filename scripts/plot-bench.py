#!/usr/bin/env python3
"""Draws the benchmark plot from results.json: throughput per system (log
scale) and triaged's decision latency at a fixed rate.

usage: plot-bench.py RESULTS_JSON OUT_PNG
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        r = json.load(f)
    names, rates = [], []
    if r["triaged"]:
        names.append("triaged\nend to end")
        rates.append(max(t["throughput"]["per_second"] for t in r["triaged"]))
    if r["raw"]:
        names.append("raw rdkafka\nconsume")
        rates.append(max(t["per_second"] for t in r["raw"]))
    if r.get("core"):
        names.append("triaged core\n(memory)")
        rates.append(r["core"]["per_second"])
    for p in r["peers"]:
        names.append(p["system"].replace(" ", "\n", 1))
        rates.append(p["events_per_second"])

    lat = r.get("latency")
    fig, axes = plt.subplots(1, 2 if lat else 1, figsize=(12 if lat else 8, 4.8), squeeze=False)
    ax = axes[0][0]
    colors = ["#1f77b4" if n.startswith("triaged") else "#7f7f7f" for n in names]
    bars = ax.bar(names, rates, color=colors)
    ax.set_yscale("log")
    if rates:
        ax.set_ylim(bottom=min(rates) / 10)
    ax.set_ylabel("events per second (log scale)")
    s = r["storm"]
    ax.set_title(f"Throughput: {s['events']:,} events, {s['cis']:,} CIs, {s['faults']} faults")
    for b, v in zip(bars, rates):
        ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    if lat:
        ax2 = axes[0][1]
        series = [("triaged (create to decision)", lat, "#1f77b4")]
        if r.get("raw_latency"):
            series.append(("raw consume loop (create to receipt)", r["raw_latency"], "#7f7f7f"))
        width = 0.8 / len(series)
        for i, (label, l, color) in enumerate(series):
            xs = [q + i * width for q in range(2)]
            vals = [l["p50_ms"], l["p99_ms"]]
            bars = ax2.bar(xs, vals, width=width, color=color, label=label)
            for b, v in zip(bars, vals):
                ax2.annotate(f"<= {v:g} ms", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax2.set_xticks([q + width * (len(series) - 1) / 2 for q in range(2)], ["p50", "p99"])
        ax2.axhline(5.0, color="#d62728", linestyle="--", label="target p99 < 5 ms")
        ax2.set_ylabel("ms (histogram bucket upper bound)")
        ax2.set_title(f"Latency at {lat['rate']:,} events/s")
        ax2.legend(loc="upper left")
    fig.suptitle(r["machine"], fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
