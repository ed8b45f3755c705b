"""NUDGE-N and NUDGE-M as eval baselines (`embedfit.adapters.nudge`): fitted on the store's train split with
gamma chosen by the package on its dev split, exactly as the package's README does; queries unchanged."""
from __future__ import annotations

import numpy as np

from embedfit.adapters.data import TrainingData
from embedfit.adapters.nudge import NUDGE_SYSTEMS
from embedfit.adapters.nudge import nudge_embeddings as _nudge

__all__ = ["NUDGE_SYSTEMS", "nudge_embeddings"]


def nudge_embeddings(data: TrainingData, key: str) -> np.ndarray:
    """NUDGE-N or NUDGE-M passage vectors for the store's data, in `data.passage_ids` order."""
    return _nudge(data.P, data.train, data.dev, key)
