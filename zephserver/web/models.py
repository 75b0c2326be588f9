"""Models of the zephserver app."""
