"""One module per rule's entry point: `python -m tier1.stages.<stage>` (`tier1 --help` lists them).

The paths in their usage lines are placeholders; where the workflow puts each file is tier1.layout.
"""
