"""The project's shape, read from its source: no family named outside pretraining/families/, and
imports only downwards through the layers, with no cycle."""

import ast
import os
import re

from conftest import ROOT
from pretraining.families import FAMILIES

PACKAGES = ("ja_common", "tokenizer", "pretraining", "electra")
CLIS = ("run_pretraining", "train_tokenizer", "extract_electra_model")


def project_modules():
    """{module name: path} of every project module."""
    modules = {name: os.path.join(ROOT, f"{name}.py") for name in CLIS}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for file in files:
                if file.endswith(".py"):
                    parts = os.path.relpath(os.path.join(folder, file), ROOT)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    modules[".".join(parts)] = os.path.join(folder, file)
    return modules


def parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), path)


# ---- no family outside families/ ----

# Where a family's name belongs: its own module, the model implementations (pretraining/models/,
# each named after itself, saved as remote code) and ELECTRA's extraction tool (that family's CLI).
FAMILY_ROOMS = ("pretraining.families", "pretraining.models", "electra", "extract_electra_model")


def docstrings(tree):
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def strings_and_names(tree):
    """(line, string) of every string in the code (docstrings and comments left out), and (line, name)
    of every identifier: two lists."""
    skip = docstrings(tree)
    strings = [(n.lineno, n.value) for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]
    return strings, list(identifiers(tree))


def identifiers(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.arg):
            yield node.lineno, node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.value.lineno, node.arg
        elif isinstance(node, ast.alias):
            yield node.lineno, node.name


def family_mentions(modules, families):
    """Where code names a family: a string that is a family's name (``family == "t5"``), or an
    identifier with one as a word of it (``model.albert``, ``bert_forward``). Help texts that
    mention a preset ("e.g. bert-base") are not branches and pass."""
    word = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, families)) + r")(?![a-z0-9])", re.IGNORECASE)
    names = {f.lower() for f in families}
    found = []
    for module, path in sorted(modules.items()):
        if module.startswith(FAMILY_ROOMS):
            continue
        strings, idents = strings_and_names(parse(path))
        hits = [(line, text) for line, text in strings if text.lower() in names]
        hits += [(line, text) for line, text in idents if word.search(text)]
        found += [f"{os.path.relpath(path, ROOT)}:{line}: {text!r}" for line, text in sorted(hits)]
    return found


def test_no_module_outside_families_names_a_family():
    assert family_mentions(project_modules(), FAMILIES) == []


def test_the_scan_finds_a_family_name_in_code():
    """The scan itself: an attribute (``family.loss_weights``) and a string (``"batch-size"``) are found."""
    modules = project_modules()
    assert family_mentions({"pretraining.train": modules["pretraining.train"]}, ["loss_weights"]) != []
    assert family_mentions({"pretraining.presets": modules["pretraining.presets"]}, ["batch-size"]) != []


# ---- layers ----

# lower layers never import higher ones; within pretraining, families/ build on data/, models/ and
# flops.py, and the run (presets, training, evaluation, checkpoints) on the families
LAYERS = [("ja_common",), ("tokenizer",), ("pretraining.options", "pretraining.flops", "pretraining.models",
                                           "pretraining.data"),
          ("pretraining.families",), ("pretraining",), ("electra",), CLIS]


def layer_of(module):
    matches = [(len(prefix), k) for k, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def imports(module, path, modules):
    """The project modules this module imports, at the top or inside functions."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != module}
    return found


def test_imports_go_down_the_layers_without_cycles():
    modules = project_modules()
    graph = {m: imports(m, p, modules) for m, p in modules.items()}
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in graph.items() for t in targets if layer_of(t) > layer_of(m)]
    assert upward == []
    # depth-first search for a cycle
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
    assert "pretraining.data.cache" in graph["pretraining.data.prepare"]  # the scan sees relative imports
