"""Draws bench/prewarm's results: the Pareto frontier of the policy sweep (75th-percentile
application cold-start % against wasted memory time normalised to fixed 10-minute keep-alive)
and the distribution of per-application cold-start %. Usage: plot.py OUT_DIR (run.sh calls it).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out):
    sweep = list(csv.DictReader(open(f"{out}/prewarm_sweep.csv")))
    last = max(int(r["sample"]) for r in sweep)
    rows = [r for r in sweep if int(r["sample"]) == last]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"fixed": ("o-", "tab:gray"), "hybrid": ("s-", "tab:blue"), "wisp": ("^", "tab:red")}
    for family, (marker, colour) in styles.items():
        points = sorted(
            ((float(r["wasted_norm_pct"]), float(r["cold_p75"]), r["policy"])
             for r in rows if r["family"] == family and r["policy"] != family),
            key=lambda p: p[0])
        mains = [(float(r["wasted_norm_pct"]), float(r["cold_p75"]), r["policy"])
                 for r in rows if r["policy"] == family]
        if points:
            left.plot([p[0] for p in points], [p[1] for p in points], marker, color=colour,
                      alpha=0.6, label=f"{family} sweep")
            for x, y, name in points:
                left.annotate(name.replace(family + "-", ""), (x, y), fontsize=7, alpha=0.7)
        for x, y, name in mains:
            left.plot([x], [y], "*", color=colour, markersize=16, label=name)
    # The frontier over every run: no other run is better on both axes.
    all_points = sorted((float(r["wasted_norm_pct"]), float(r["cold_p75"])) for r in rows)
    frontier, best = [], float("inf")
    for x, y in all_points:
        if y < best:
            frontier.append((x, y))
            best = y
    left.step([p[0] for p in frontier], [p[1] for p in frontier], "k--", where="post",
              linewidth=1, label="Pareto frontier")
    left.set_xlabel("wasted memory time (% of fixed 10-min keep-alive)")
    left.set_ylabel("75th-percentile app cold-start %")
    left.set_title(f"{last}-function Azure sample")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)

    apps = [r for r in csv.DictReader(open(f"{out}/prewarm_app_cold.csv"))
            if int(r["sample"]) == last]
    for policy in sorted({r["policy"] for r in apps}):
        values = sorted(float(r["cold_pct"]) for r in apps if r["policy"] == policy)
        right.plot(values, [100.0 * (i + 1) / len(values) for i in range(len(values))],
                   label=policy)
    right.axhline(75, color="k", linewidth=0.5, linestyle=":")
    right.set_xlabel("application cold-start %")
    right.set_ylabel("% of applications (CDF)")
    right.set_title("per-application cold-start % distribution")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/prewarm_pareto.png", dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
