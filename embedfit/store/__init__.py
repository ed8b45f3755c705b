"""The store: one folder holding what ingest produced (the dataset, splits, negatives, query vectors, the BM25 index,
the manifest) and the Chroma collections of our own vectors (`chroma_store`: clients, locks, batched writes)."""
