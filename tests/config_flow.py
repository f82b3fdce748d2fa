"""Where the run config goes: the files of the tier1 package that the training stage's config
object reaches, followed from `tier1.stages.train.train` through the calls that pass it on.

    python tests/config_flow.py [PACKAGE_DIR [ENTRY_MODULE]]
    (default: workflow/tier1 beside this folder, tier1.stages.train)

Read from the source (AST), nothing imported. From the entry, every call that can be resolved to
a function or class of the package is followed (a call graph). A function *holds the config*
when it gets it passed in (an argument that is the config: a name bound to it, or `x.cfg`) or
reads it off an object (`self.cfg`, `trainer.cfg`). A *move* is a call into another file whose
callee holds the config; the files are those of the functions that hold it (tier1/config.py,
the config's own home, is left out: calling the config's methods is using it, not passing it on).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ENTRY = ("tier1.stages.train", "train")
CONFIG_TYPES = {"TrainConfig"}
CONFIG_NAMES = {"cfg"}
HOME = "tier1.config"


@dataclass
class Function:
    module: str
    qualname: str  # "f" or "Class.method"
    node: ast.FunctionDef
    cls: str | None = None

    @property
    def params(self) -> list[ast.arg]:
        a = self.node.args
        return [*a.posonlyargs, *a.args, *a.kwonlyargs]


@dataclass
class Package:
    root: Path
    functions: dict[tuple[str, str], Function] = field(default_factory=dict)
    classes: dict[tuple[str, str], ast.ClassDef] = field(default_factory=dict)
    imports: dict[str, dict[str, str]] = field(default_factory=dict)  # module -> local name -> dotted target
    files: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path) -> Package:
        pkg = cls(root)
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            pkg.files[module] = path
            tree = ast.parse(path.read_text(), filename=str(path))
            names: dict[str, str] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tier1"):
                    for alias in node.names:
                        names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("tier1"):
                            names[alias.asname or alias.name] = alias.name
            pkg.imports[module] = names
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    pkg.functions[(module, node.name)] = Function(module, node.name, node)
                elif isinstance(node, ast.ClassDef):
                    pkg.classes[(module, node.name)] = node
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            q = f"{node.name}.{item.name}"
                            pkg.functions[(module, q)] = Function(module, q, item, node.name)
        return pkg

    def target(self, dotted: str) -> tuple[str, str] | None:
        """(module, name) of a dotted path to a function or class of the package."""
        module, _, name = dotted.rpartition(".")
        if (module, name) in self.functions or (module, name) in self.classes:
            return module, name
        return None

    def resolve(self, fn: Function, call: ast.Call, types: dict[str, str]) -> Function | None:
        """The package function a call runs (a class call runs its __init__), if it can be told."""
        f = call.func
        dotted = None
        if isinstance(f, ast.Name):
            if (fn.module, f.id) in self.functions or (fn.module, f.id) in self.classes:
                dotted = f"{fn.module}.{f.id}"
            else:
                dotted = self.imports[fn.module].get(f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            base = f.value.id
            if base == "self" and fn.cls:
                key = (fn.module, f"{fn.cls}.{f.attr}")
                return self.functions.get(key)
            if base in types:  # a local of a known package class: its method
                module, cls = types[base]
                return self.functions.get((module, f"{cls}.{f.attr}"))
            imported = self.imports[fn.module].get(base)
            if imported:
                dotted = f"{imported}.{f.attr}"
        if dotted is None:
            return None
        found = self.target(dotted)
        if found is None:
            return None
        module, name = found
        if (module, name) in self.classes:
            return self.functions.get((module, f"{name}.__init__"))
        return self.functions.get((module, name))

    def class_of(self, fn: Function, call: ast.Call) -> tuple[str, str] | None:
        """(module, class) when `call` constructs, or is annotated to return, a package class."""
        f = call.func
        dotted = None
        if isinstance(f, ast.Name):
            dotted = f"{fn.module}.{f.id}" if (fn.module, f.id) in self.classes else self.imports[fn.module].get(f.id)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            imported = self.imports[fn.module].get(f.value.id)
            dotted = f"{imported}.{f.attr}" if imported else None
        if dotted is None:
            return None
        found = self.target(dotted)
        if found is None:
            return None
        if found in self.classes:
            return found
        callee = self.functions.get(found)
        returns = callee.node.returns if callee else None
        if isinstance(returns, ast.Name):
            dotted = (f"{callee.module}.{returns.id}" if (callee.module, returns.id) in self.classes
                      else self.imports[callee.module].get(returns.id))
            return self.target(dotted) if dotted else None
        return None


def is_config(expr: ast.AST, tracked: set[str]) -> bool:
    if isinstance(expr, ast.Name):
        return expr.id in tracked
    return isinstance(expr, ast.Attribute) and expr.attr == "cfg"


def annotated_config(arg: ast.arg) -> bool:
    ann = arg.annotation
    text = ast.unparse(ann) if ann is not None else ""
    return arg.arg in CONFIG_NAMES or any(t in text.split(" | ") for t in CONFIG_TYPES)


def reads_config(fn: Function) -> bool:
    """The function reads the config off an object (`self.cfg`, `trainer.cfg`)."""
    return any(isinstance(n, ast.Attribute) and n.attr == "cfg" and isinstance(n.ctx, ast.Load)
               for n in ast.walk(fn.node))


@dataclass
class Flow:
    files: list[str]  # the files of the functions that hold the config (config.py left out)
    moves: list[tuple[str, str]]  # (caller module, callee module) for each call into another file that hands it on
    modules_called: list[str]  # every package module the calls from the entry enter, config or not


def flow(root: Path, entry_module: str = ENTRY[0]) -> Flow:
    """Where the config goes from the entry."""
    pkg = Package.read(root)
    entry = pkg.functions[(entry_module, ENTRY[1])]
    holds: set[tuple[str, str]] = set()
    visited: set[str] = set()  # every module the calls from the entry enter, config or not
    moves: list[tuple[str, str]] = []
    seen: set[tuple[tuple[str, str], frozenset]] = set()
    todo: list[tuple[Function, frozenset]] = [(entry, frozenset(p.arg for p in entry.params if annotated_config(p)))]
    while todo:
        fn, tracked = todo.pop()
        key = ((fn.module, fn.qualname), tracked)
        if key in seen:
            continue
        seen.add(key)
        visited.add(fn.module)
        if tracked or reads_config(fn):
            holds.add((fn.module, fn.qualname))
        names = set(tracked)
        types: dict[str, tuple[str, str]] = {}
        for node in ast.walk(fn.node):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                made = pkg.class_of(fn, node.value)
                for t in node.targets:
                    if isinstance(t, ast.Name) and made:
                        types[t.id] = made
            if isinstance(node, ast.Assign) and is_config(node.value, names):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        names.add(t.id)
        for node in ast.walk(fn.node):
            if not isinstance(node, ast.Call):
                continue
            callee = pkg.resolve(fn, node, types)
            if callee is None or callee.module == HOME:
                continue
            params = callee.params
            if params and params[0].arg == "self":
                params = params[1:]
            passed = set()
            for i, a in enumerate(node.args):
                if i < len(params) and is_config(a, names):
                    passed.add(params[i].arg)
            for kw in node.keywords:
                if kw.arg and is_config(kw.value, names):
                    passed.add(kw.arg)
            callee_holds = bool(passed) or reads_config(callee)
            if callee_holds and callee.module != fn.module:
                moves.append((fn.module, callee.module))
            todo.append((callee, frozenset(passed)))
    files = sorted({str(pkg.files[m].relative_to(root.parent)) for m, _ in holds if m != HOME})
    return Flow(files, moves, sorted(visited))


def main(argv: list[str]) -> None:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "workflow" / "tier1"
    entry_module = argv[1] if len(argv) > 1 else ENTRY[0]
    found = flow(root, entry_module)
    files, unique = found.files, sorted(set(found.moves))
    print(f"the run config from {entry_module}.{ENTRY[1]} reaches {len(files)} file(s) in {len(unique)} move(s):")
    for f in files:
        print(f"  {f}")
    for a, b in unique:
        print(f"  move {a} -> {b}")
    print(f"(the calls from the entry enter {len(found.modules_called)} module(s) of the package in all)")


if __name__ == "__main__":
    main(sys.argv[1:])
