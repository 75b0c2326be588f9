"""The daemon's infrastructure: nothing here knows about jobs, tasks or the web."""
