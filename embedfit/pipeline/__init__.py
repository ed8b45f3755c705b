"""The ingest run (`ingest`): load a dataset, clean and filter, split, embed (cached), store in Chroma, mine
negatives, build the BM25 index; locally or on Ray Data actors (`ray_engine`)."""
