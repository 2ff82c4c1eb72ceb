"""Reports of a federated run: per-round table rows, the partition table, and two PNG plots
(rounds, partition) drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np


def round_rows(rounds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per round (round 0 is the starting model): losses, accuracies, who took part."""
    rows = []
    for r in rounds:
        fails = r.get("failures") or []
        rows.append({
            "round": int(r["round"]),
            "train_loss": None if r.get("train_loss") is None else round(float(r["train_loss"]), 4),
            "val_loss": round(float(r["val_loss"]), 4),
            "val_accuracy": round(float(r["val_accuracy"]), 4),
            "test_loss": round(float(r["test_loss"]), 4),
            "test_accuracy": round(float(r["test_accuracy"]), 4),
            "clients": len(r.get("participants") or []),
            "participants": " ".join(str(c) for c in (r.get("participants") or [])),
            "failures": "; ".join(f"client {f.get('client')}: {f.get('reason')}" for f in fails),
        })
    return rows


def partition_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per client: its size, the labels it holds and the count of each label."""
    rows = []
    for i, counts in enumerate(summary["label_counts"]):
        row: dict[str, Any] = {"client": i, "size": int(sum(counts)), "labels": int(sum(1 for c in counts if c))}
        row.update({f"label_{k}": int(c) for k, c in enumerate(counts)})
        rows.append(row)
    return rows


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def round_plot_png(rounds: Sequence[dict[str, Any]], title: str = "federated rounds") -> bytes:
    """Loss (train, val, test) and accuracy (val, test) of the global model against the round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [int(r["round"]) for r in rounds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    tl = [(int(r["round"]), float(r["train_loss"])) for r in rounds if r.get("train_loss") is not None]
    if tl:
        a1.plot(*zip(*tl), "o-", label="train (clients)")
    a1.plot(x, [r["val_loss"] for r in rounds], "s-", label="val (global)")
    a1.plot(x, [r["test_loss"] for r in rounds], "^-", label="test (global)")
    a1.set_xlabel("round")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(x, [r["val_accuracy"] for r in rounds], "s-", label="val")
    a2.plot(x, [r["test_accuracy"] for r in rounds], "^-", label="test")
    a2.set_xlabel("round")
    a2.set_ylabel("accuracy of the global model")
    a2.set_ylim(0, 1)
    a2.legend()
    fig.suptitle(title)
    return _fig_bytes(fig)


def partition_plot_png(summary: dict[str, Any], title: str | None = None) -> bytes:
    """Stacked bars: samples of each label held by each client."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(summary["label_counts"])
    n_clients, n_classes = counts.shape
    fig, ax = plt.subplots(figsize=(max(6, min(20, 0.25 * n_clients + 4)), 3.6))
    bottom = np.zeros(n_clients)
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    for k in range(n_classes):
        ax.bar(np.arange(n_clients), counts[:, k], bottom=bottom, color=cmap(k % cmap.N), label=str(k), width=0.85)
        bottom += counts[:, k]
    ax.set_xlabel("client")
    ax.set_ylabel("samples")
    ax.legend(title="label", ncol=2, fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(title or f"partition '{summary['scheme']}': {summary['mean_labels_per_client']:.1f} labels per client")
    return _fig_bytes(fig)


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown embedding a PNG as a data: URI (Prefect's image artifacts need a hosted URL)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def markdown_report(rounds: Sequence[dict[str, Any]], summary: dict[str, Any], strategy: str, engine: str) -> str:
    """A markdown page: headline figures, the round plot and the partition plot."""
    last = rounds[-1] if rounds else {}
    first = rounds[0] if rounds else {}
    lines = [f"# Federated rounds: {strategy} ({engine} engine)", "",
             f"- clients: {summary['num_clients']}, partition `{summary['scheme']}`, "
             f"{summary['mean_labels_per_client']:.2f} labels per client on average, sizes "
             f"{summary['min_size']}..{summary['max_size']}",
             f"- rounds: {max(0, len(rounds) - 1)}; global test accuracy {first.get('test_accuracy', float('nan')):.4f} "
             f"-> {last.get('test_accuracy', float('nan')):.4f}",
             f"- failed or rejected client replies: {sum(len(r.get('failures') or []) for r in rounds)}", "",
             png_markdown(round_plot_png(rounds, f"{strategy}: global model per round"), "rounds"), "",
             png_markdown(partition_plot_png(summary), "partition"), ""]
    return "\n".join(lines)
