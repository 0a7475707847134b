"""Search: faiss indexes of a run's gallery, queries by text or image, the web page."""
