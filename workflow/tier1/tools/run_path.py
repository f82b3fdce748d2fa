"""A path of a named run, as tier1.layout spells it, for the Makefile and the GPU check's shell:

    python -m tier1.tools.run_path RUN [NAME]     # NAME one of tier1.layout's path constants

(Not `python -m tier1.layout`: the package imports that module first, and runpy warns of it.)
"""

from __future__ import annotations

import sys

from tier1.layout import named_path

if __name__ == "__main__":
    print(named_path(*sys.argv[1:3]))
