"""Pure scoring, no I/O: retrieval metrics (`retrieval`), intervals and paired tests (`stats`), and the seen/unseen
split of queries (`seen`). Selection scores its candidates with these too, so they sit below the adapters."""
