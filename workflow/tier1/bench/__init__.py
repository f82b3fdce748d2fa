"""tier1 against sentence-transformers on one device: training steps/s and encoding texts/s.

`python -m tier1.bench.compare` (the `bench` rule) runs each side in a process of its own,
alternating, and writes the medians, spreads and ratios; `tier1.bench.side` is one such process.
"""
