"""The sweep's plots: accuracy vs delay (the Pareto view) and pauses by difficulty.

Must not: run anything; it draws rows that `sweep.py` measured.
"""

from __future__ import annotations

from pathlib import Path

ALL = "all"  # the difficulty value of a row that covers every difficulty


def plot(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """pareto.png (accuracy vs mean pauses) and by_difficulty.png (pauses vs difficulty at several urgencies)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    overall = [r for r in rows if r["difficulty"] == ALL]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in overall if r["task"] == task]
        fixed = sorted({(int(r["param"]), r["mean_pauses"], r["accuracy"]) for r in mine if r["policy"] == "fixed"})
        if fixed:
            ax.plot([f[1] for f in fixed], [f[2] for f in fixed], "s--", color="grey", label="fixed k pauses")
            for k, x, y in fixed:
                ax.annotate(f"k={k}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8, color="grey")
        conf = sorted([r for r in mine if r["policy"] == "confidence"], key=lambda r: r["urgency"])
        if conf:
            ax.plot([r["mean_pauses"] for r in conf], [r["accuracy"] for r in conf], "^:", color="tab:orange",
                    label="confidence threshold (u = 0 to 1)")
        rand = sorted({(r["param"], r["mean_pauses"], r["accuracy"]) for r in mine if r["policy"] == "random"})
        if rand:
            ax.scatter([r[1] for r in rand], [r[2] for r in rand], marker="x", color="tab:red", label="random pauses")
        learned = sorted([r for r in mine if r["policy"] == "learned"], key=lambda r: r["urgency"])
        if learned:
            ax.plot([r["mean_pauses"] for r in learned], [r["accuracy"] for r in learned], "-", color="black",
                    lw=0.8, alpha=0.5)
            points = ax.scatter([r["mean_pauses"] for r in learned], [r["accuracy"] for r in learned],
                                c=[r["urgency"] for r in learned], cmap=cmap, vmin=0, vmax=1, s=60,
                                edgecolors="black", zorder=3, label="learned controller")
            fig.colorbar(points, ax=ax, label="urgency u (0 = accuracy only, 1 = speed only)")
        ax.set_xlabel("mean pauses per answer (delay)")
        ax.set_ylabel("accuracy (task score)")
        ax.set_title(f"accuracy vs delay: {task}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    pareto = out_dir / "pareto.png"
    fig.savefig(pareto, dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        buckets = [r for r in rows if r["task"] == task and r["difficulty"] != ALL]
        difficulties = sorted({r["difficulty"] for r in buckets})
        # Solid: the learned controller; dashed: the confidence baseline at the same urgencies, for reference.
        for policy, style in (("learned", "o-"), ("confidence", "^--")):
            source = [r for r in buckets if r["policy"] == policy]
            urgencies = sorted({r["urgency"] for r in source})
            shown = [u for u in urgencies if any(abs(u - x) < 1e-9 for x in (0.0, 0.2, 0.5, 0.8, 1.0))] or urgencies
            for u in shown:
                pts = sorted((r["difficulty"], r["mean_pauses"]) for r in source if r["urgency"] == u)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=cmap(u),
                        label=f"{'learned' if policy == 'learned' else 'confidence'}, u = {u:.1f}")
        ax.set_xticks(difficulties)
        ax.set_ylim(bottom=-0.05)
        ax.set_xlabel("difficulty")
        ax.set_ylabel("mean pauses per answer")
        ax.set_title(f"pauses by difficulty: {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    by_difficulty = out_dir / "by_difficulty.png"
    fig.savefig(by_difficulty, dpi=120)
    plt.close(fig)
    return pareto, by_difficulty
