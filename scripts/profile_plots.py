#!/usr/bin/env python3
"""Pictures of an esft run profile (OUT/profile.json, docs/formats.md), for `esft profile RUN_DIR`.

Usage: profile_plots.py PROFILE_JSON OUT_DIR

Writes PNGs into OUT_DIR, each under a temporary name and renamed when complete:
  heatmap_all_layers.png        rank x rank bytes per step, all MoE layers and directions   800 x 600 px
  heatmap_layer_<L>.png         the same for MoE layer L                                   800 x 600 px
  bytes_per_layer_direction.png off-rank bytes per step per layer and direction, minimum   1000 x 600 px
  rows_received.png             rows received per rank per layer (load imbalance)          1000 x 600 px
  time_split.png                a step's time per rank: compute, each collective, waiting  1000 x 600 px
Sizes are figure inches x DPI (no tight bounding box, so they do not depend on the labels).
"""
import json
import os
import sys

DPI = 100
HEATMAP_INCHES = (8, 6)
CHART_INCHES = (10, 6)
DIRECTIONS = ["forward dispatch", "forward combine", "backward dispatch", "backward combine"]
TIME_CATEGORIES = ["forward counts"] + DIRECTIONS + ["other"]


def save(fig, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)
    print(f"wrote {path}")


def finish_layer_chart(fig, ax, names, ylabel, title, ncol, path):
    """Per-MoE-layer bar charts share their axes, legend and saving."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names)
    ax.set_xlabel("MoE layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.subplots_adjust(bottom=0.2)
    fig.legend(loc="lower center", ncol=ncol, fontsize=9)
    save(fig, path)
    import matplotlib.pyplot as plt  # already loaded by main()
    plt.close(fig)


def heatmap(plt, matrix, title, path):
    ranks = len(matrix)
    fig, ax = plt.subplots(figsize=HEATMAP_INCHES)
    im = ax.imshow(matrix, cmap="viridis", vmin=0)  # from 0: colours in proportion to bytes
    fig.colorbar(im, ax=ax, label="bytes per step")
    ax.set_xticks(range(ranks))
    ax.set_yticks(range(ranks))
    ax.set_xlabel("destination rank")
    ax.set_ylabel("source rank")
    ax.set_title(title)
    top = max(max(row) for row in matrix) or 1
    if ranks <= 16:
        for s in range(ranks):
            for t in range(ranks):
                v = matrix[s][t]
                ax.text(t, s, human(v), ha="center", va="center", color="black" if v > 0.6 * top else "white", fontsize=9)
    save(fig, path)
    plt.close(fig)


def human(b):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b:.0f} B"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, out = sys.argv[1], sys.argv[2]
    with open(source) as f:
        p = json.load(f)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks, steps, layers = p["ranks"], p["steps"], p["layers"]
    per_step = 1.0 / steps

    def layer_matrix(layer):
        return [[sum(layer["bytes"][d][s][t] for d in DIRECTIONS) * per_step for t in range(ranks)] for s in range(ranks)]

    total = [[0.0] * ranks for _ in range(ranks)]
    for layer in layers:
        m = layer_matrix(layer)
        for s in range(ranks):
            for t in range(ranks):
                total[s][t] += m[s][t]
    # A per-layer heatmap of an earlier profile in this folder whose layer this one lacks would mislead.
    current = {f"heatmap_layer_{layer['layer']}.png" for layer in layers}
    for name in os.listdir(out):
        if name.startswith("heatmap_layer_") and name.endswith(".png") and name not in current:
            os.remove(os.path.join(out, name))
    heatmap(plt, total, f"bytes per step, all MoE layers ({ranks} ranks; diagonal: rows a rank keeps)",
            os.path.join(out, "heatmap_all_layers.png"))
    for layer in layers:
        heatmap(plt, layer_matrix(layer), f"bytes per step, layer {layer['layer']}",
                os.path.join(out, f"heatmap_layer_{layer['layer']}.png"))

    names = [str(layer["layer"]) for layer in layers]
    width = 0.8 / len(DIRECTIONS)
    fig, ax = plt.subplots(figsize=CHART_INCHES)
    for i, d in enumerate(DIRECTIONS):
        off = [sum(layer["bytes"][d][s][t] for s in range(ranks) for t in range(ranks) if s != t) * per_step for layer in layers]
        ax.bar([x + (i - 1.5) * width for x in range(len(layers))], off, width, label=d)
        minimum = [sum(layer["minimum_rows"]["forward" if d.startswith("forward") else "backward"][s][t]
                       for s in range(ranks) for t in range(ranks) if s != t) * p["row_bytes"][d] * per_step for layer in layers]
        ax.scatter([x + (i - 1.5) * width for x in range(len(layers))], minimum, marker="_", s=200, color="black",
                   label="analytic minimum" if i == 0 else None, zorder=3)
    finish_layer_chart(fig, ax, names, "bytes per step sent to other ranks", "expert-parallel bytes per layer and direction",
                       5, os.path.join(out, "bytes_per_layer_direction.png"))

    width = 0.8 / ranks
    fig, ax = plt.subplots(figsize=CHART_INCHES)
    for r in range(ranks):
        ax.bar([x + (r - (ranks - 1) / 2) * width for x in range(len(layers))],
               [layer["received_rows"][r] * per_step for layer in layers], width, label=f"rank {r}")
    for x, layer in enumerate(layers):
        mean = sum(layer["received_rows"]) * per_step / ranks
        ax.hlines(mean, x - 0.4, x + 0.4, colors="black", linestyles="dashed", label="mean" if x == 0 else None)
    finish_layer_chart(fig, ax, names, "rows received per step (forward dispatch)", "load per rank (imbalance = max / mean)",
                       min(ranks + 1, 8), os.path.join(out, "rows_received.png"))

    fig, ax = plt.subplots(figsize=CHART_INCHES)
    left = [0.0] * ranks
    segments = [("compute", [t["compute_seconds"] for t in p["time"]])]
    for c in TIME_CATEGORIES:
        segments.append((c, [t["collective_seconds"].get(c, 0) - t["waiting_seconds_by_collective"].get(c, 0) for t in p["time"]]))
    segments.append(("waiting", [t["waiting_seconds"] for t in p["time"]]))
    for name, values in segments:
        values = [v * per_step for v in values]
        ax.barh(range(ranks), values, left=left, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(ranks)])
    ax.set_xlabel("seconds per step")
    ax.set_title("time split of a step")
    # Below the axes: the bars fill the plot, a legend inside would hide them.
    fig.subplots_adjust(bottom=0.22)
    fig.legend(loc="lower center", ncol=4, fontsize=9)
    save(fig, os.path.join(out, "time_split.png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
