"""A small grid search over adapter settings, selected on dev (never on test); prints a table."""
from __future__ import annotations

import dataclasses
import itertools
import logging

from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import load_training_data
from embedfit.adapters.train import TrainResult, train_adapter
from embedfit.store.store import Store

log = logging.getLogger(__name__)


def run_grid(store: Store, base: TrainConfig, grid: dict[str, list]) -> list[tuple[dict, TrainResult]]:
    """Train once per combination of `grid` values (keys are TrainConfig fields); best first."""
    data = load_training_data(store, base.model)  # loaded once, shared by every run
    runs = []
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, values))
        cfg = dataclasses.replace(base, **setting)
        if cfg.loss == "mse" and cfg.sides != "both":
            continue
        log.info("grid run %s", setting)
        runs.append((setting, train_adapter(store, cfg, data)))
    runs.sort(key=lambda r: -r[1].curves[r[1].best_epoch][base.metric])
    return runs


def grid_table(runs: list[tuple[dict, TrainResult]], metric: str) -> str:
    """Markdown table: settings, dev metric of the selected epoch vs raw, best epoch, seconds."""
    if not runs:
        return "(no runs)"
    keys = sorted(runs[0][0])
    head = "| " + " | ".join(keys) + f" | dev {metric} | raw | Δ | best epoch | s |"
    lines = [head, "|" + "---|" * (len(keys) + 5)]
    for setting, r in runs:
        sel = r.curves[r.best_epoch][metric]
        raw = r.identity_dev[metric]
        lines.append("| " + " | ".join(str(setting[k]) for k in keys)
                     + f" | {sel:.4f} | {raw:.4f} | {sel - raw:+.4f} | {r.best_epoch} | {r.seconds:.1f} |")
    return "\n".join(lines)
