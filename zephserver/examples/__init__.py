"""Small programs the example settings launch (so a newcomer sees the whole flow)."""
