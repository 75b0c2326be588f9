"""One thin module per console script: parse, talk to the daemon, render, return a code."""
