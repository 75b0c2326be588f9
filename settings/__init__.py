"""Settings files only, no logic."""
