"""Customizations on frozen embeddings: adapter modules and losses, training and selection (identity always a
candidate), the query memory, saving and loading, the projected collection, and exports for other stacks."""
