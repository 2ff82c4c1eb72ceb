"""Reports of a federated run: per-round table rows (server-side and federated evaluation, each
client's status and example counts), the clients' validation table, the partition table, and two
PNG plots (rounds, partition) drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np


def _r4(v) -> float | None:
    return None if v is None else round(float(v), 4)


def _client_cells(r: dict[str, Any]) -> str:
    """``client: trained on n, evaluated on m (acc)`` for each client of a round."""
    cells = []
    for c, info in sorted((r.get("clients") or {}).items(), key=lambda kv: int(kv[0])):
        ev = (r.get("client_eval") or {}).get(c)
        cell = f"{c}: n={info.get('train_examples')}"
        if ev is not None:
            cell += f", held-out {ev['examples']} acc {ev['accuracy']:.3f}"
        cells.append(cell)
    return "; ".join(cells)


def round_rows(rounds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per round (round 0 is the starting model): losses, accuracies (server-side on the
    orchestrator's held-out split; federated: the clients' held-out rows, example-weighted), who
    took part with how many examples, who failed and why."""
    rows = []
    for r in rounds:
        fails = r.get("failures") or []
        rows.append(
            {
                "round": int(r["round"]),
                "train_loss": None if r.get("train_loss") is None else round(float(r["train_loss"]), 4),
                "val_loss": round(float(r["val_loss"]), 4),
                "val_accuracy": round(float(r["val_accuracy"]), 4),
                "test_loss": round(float(r["test_loss"]), 4),
                "test_accuracy": round(float(r["test_accuracy"]), 4),
                "client_eval_accuracy": _r4(r.get("client_eval_accuracy")),
                "client_eval_examples": r.get("client_eval_examples"),
                "clients": len(r.get("participants") or []),
                "client_details": _client_cells(r),
                "participants": " ".join(str(c) for c in (r.get("participants") or [])),
                "failures": "; ".join(f"client {f.get('client')}: {f.get('reason')}" for f in fails),
            }
        )
    return rows


def validation_rows(validation: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per client of the federated validation: status, rows, violated rules (counts, features)."""
    rows = []
    for c in validation:
        rules = "; ".join(
            f"{v['rule']} ({v['count']}" + (f": {', '.join(v['features'][:5])}" if v.get("features") else "") + ")"
            for v in c.get("violations") or []
        )
        rows.append(
            {
                "client": c.get("client"),
                "node": str(c.get("node")),
                "status": c.get("status"),
                "rows": c.get("rows"),
                "rules": rules or (c.get("reason") or ""),
            }
        )
    return rows


def partition_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per client: its size, the labels it holds and the count of each label (for data the
    clients hold themselves, only the size: the server never sees their labels)."""
    if summary.get("label_counts") is None:
        return [{"client": i, "size": int(n)} for i, n in enumerate(summary.get("sizes") or [])]
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


def round_plot_png(
    rounds: Sequence[dict[str, Any]], title: str = "federated rounds", central_baseline: float | None = None
) -> bytes:
    """Loss (train, val, test) and accuracy (val, test; the clients' held-out rows when federated
    evaluation ran) of the global model against the round, with central training's test accuracy on
    the same split as a line when ``central_baseline`` is given."""
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
    fe = [
        (int(r["round"]), float(r["client_eval_accuracy"])) for r in rounds if r.get("client_eval_accuracy") is not None
    ]
    if fe:
        a2.plot(*zip(*fe), "d-", label="clients' held-out (federated)")
    if central_baseline is not None:
        a2.axhline(central_baseline, color="k", ls="--", lw=1, label=f"central training ({central_baseline:.3f})")
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

    if summary.get("label_counts") is None:  # client-local data: sizes only
        sizes = summary.get("sizes") or []
        fig, ax = plt.subplots(figsize=(max(6, min(20, 0.25 * len(sizes) + 4)), 3.6))
        ax.bar(np.arange(len(sizes)), sizes, width=0.85)
        ax.set_xlabel("client")
        ax.set_ylabel("rows (own data)")
        ax.set_title(title or "client-local data: rows per client (labels stay on the nodes)")
        return _fig_bytes(fig)
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


def markdown_report(
    rounds: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    strategy: str,
    engine: str,
    validation: Sequence[dict[str, Any]] = (),
) -> str:
    """A markdown page: headline figures, the clients' validation, the round plot and the partition plot."""
    last = rounds[-1] if rounds else {}
    first = rounds[0] if rounds else {}
    labels = (
        ""
        if summary.get("label_counts") is None
        else f"{summary['mean_labels_per_client']:.2f} labels per client on average, "
    )
    fe = last.get("client_eval_accuracy")
    lines = [
        f"# Federated rounds: {strategy} ({engine} engine)",
        "",
        f"- clients: {summary['num_clients']}, partition `{summary['scheme']}`, {labels}sizes "
        f"{summary['min_size']}..{summary['max_size']}",
        f"- federated validation: {sum(c.get('status') == 'valid' for c in validation)} of {len(validation)} "
        f"clients' data passed"
        + "".join(
            f"; client {c.get('client')} left out: {c.get('reason')}" for c in validation if c.get("status") != "valid"
        ),
        "- federated evaluation (clients' held-out rows): " + ("off" if fe is None else f"{fe:.4f}"),
        f"- rounds: {max(0, len(rounds) - 1)}; global test accuracy {first.get('test_accuracy', float('nan')):.4f} "
        f"-> {last.get('test_accuracy', float('nan')):.4f}",
        f"- failed or rejected client replies: {sum(len(r.get('failures') or []) for r in rounds)}",
        "",
        png_markdown(round_plot_png(rounds, f"{strategy}: global model per round"), "rounds"),
        "",
        png_markdown(partition_plot_png(summary), "partition"),
        "",
    ]
    return "\n".join(lines)
