"""Training curves: per-epoch train loss and dev metrics, as JSON and as a PNG plot."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from embedfit import atomic  # noqa: E402


def curves_json(curves: list[dict]) -> bytes:
    return atomic.json_text(curves).encode("utf-8")


def curves_png(curves: list[dict], metric: str, title: str) -> bytes:
    """Loss (left) and dev metrics (right); epoch 0 is the identity adapter, the dashed line its score."""
    epochs = [c["epoch"] for c in curves]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    trained = [c for c in curves if c.get("train_loss") is not None]
    ax1.plot([c["epoch"] for c in trained], [c["train_loss"] for c in trained], marker="o")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss")
    ax1.set_title("training loss")
    for key in ("MRR@10", "Recall@10", "nDCG@10", "Recall@1"):
        if key in curves[0]:
            ax2.plot(epochs, [c[key] for c in curves], marker="o", label=key, linewidth=2.5 if key == metric else 1.2)
            ax2.axhline(curves[0][key], linestyle="--", linewidth=0.8, color=ax2.lines[-1].get_color())
    ax2.set_xlabel("epoch (0 = raw embeddings)")
    ax2.set_title("dev split (dashed: raw)")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
