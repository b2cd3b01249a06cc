"""Load benchmark of the real `python -m bot` against the local fakes: `python -m bench.run --help`."""
