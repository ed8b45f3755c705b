"""The app stage: a Gradio page (and `/search` API) showing raw and adapted retrieval side by side."""
