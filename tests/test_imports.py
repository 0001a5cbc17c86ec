"""The package's modules import one another without a cycle.

The graph: one node per module of the package (a package's `__init__.py` is the package's node),
and an edge from a module to each module of the package that one of its `import` statements
names, read with `ast` from the source, nothing imported. Every import statement counts, wherever
it stands: at the top, in a function or a method, under `try` or `if`. The rule has no exception,
not even for an import put in a function to spare start-up time: such a deferral is fine, and
needs no cycle; an import put in a function to get past a module that imports this one still ties
the two into one piece (neither can be read, tested or moved without the other) and works only by
the order in which things run, which is what this test is for. The package a module lies in,
which Python imports before the module, is no edge of its own: only what a module names counts.

`from P import n` is an edge to the module `P.n` where that is a module, otherwise to `P` (the
module that defines `n`); a relative import is read against the importing module's package.
Imports by a computed name (`importlib.import_module`) are not seen.
"""

from __future__ import annotations

import ast
import os

import pytest

from train_utils import ROOT

PACKAGE = 'inception_jax'


def modules(root: str, package: str) -> dict[str, str]:
  """{dotted module name: file} for every .py file of `package` under `root`."""
  found = {}
  for directory, _, files in os.walk(os.path.join(root, package)):
    parts = os.path.relpath(directory, root).split(os.sep)
    for file in files:
      if file.endswith('.py'):
        stem = file[:-3]
        found['.'.join(parts if stem == '__init__' else [*parts, stem])] = (
            os.path.join(directory, file))
  return found


def imports(name: str, file: str, known: dict[str, str]) -> dict[str, int]:
  """{module of `known` that `file` (module `name`) imports: the line of its first import}."""
  with open(file) as f:
    tree = ast.parse(f.read(), file)
  is_package = os.path.basename(file) == '__init__.py'
  edges = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        here = name.split('.') if is_package else name.split('.')[:-1]
        here = here[:len(here) - node.level + 1]
        base = '.'.join(here + ([base] if base else []))
      targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base
                 for alias in node.names]
    else:
      continue
    for target in targets:
      if target in known and target != name:
        edges.setdefault(target, node.lineno)
  return edges


def graph(root: str, package: str) -> dict[str, dict[str, int]]:
  known = modules(root, package)
  return {name: imports(name, file, known) for name, file in sorted(known.items())}


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
  """One cycle (its modules in import order, the first again at the end) for each group of
  modules that import one another (Tarjan's strongly connected components)."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in edges[node]:
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      group = []
      while not group or group[-1] != node:
        group.append(stack.pop())
        on_stack.discard(group[-1])
      if len(group) > 1:
        groups.append(set(group))

  for node in edges:
    if node not in index:
      visit(node)
  return [_one_cycle(edges, group) for group in groups]


def _one_cycle(edges, group: set[str]) -> list[str]:
  """A shortest cycle through the first module of `group` (breadth first within the group)."""
  start = min(group)
  paths = {start: [start]}
  queue = [start]
  for node in queue:
    for target in sorted(edges[node]):
      if target == start:
        return paths[node] + [start]
      if target in group and target not in paths:
        paths[target] = paths[node] + [target]
        queue.append(target)
  raise AssertionError(f'no cycle through {start} in {sorted(group)}')


def describe(edges, cycle: list[str]) -> str:
  """'a -> b (line 3 of a) -> a (line 9 of b)'."""
  steps = [cycle[0]] + [f'{b} (line {edges[a][b]} of {a})' for a, b in zip(cycle, cycle[1:])]
  return ' -> '.join(steps)


@pytest.mark.quick
def test_the_package_has_no_import_cycle():
  edges = graph(ROOT, PACKAGE)
  # The reading sees both kinds of import (a vacuous graph would pass): one at the top of a module
  # and one in a function.
  assert 'inception_jax.errors' in edges['inception_jax.faults']
  assert 'inception_jax.faults' in edges['inception_jax.startup']
  found = [describe(edges, cycle) for cycle in cycles(edges)]
  assert not found, 'import cycles in the package:\n' + '\n'.join(found)


def test_a_cycle_through_a_function_level_import_is_named(tmp_path):
  package = tmp_path / 'pkg'
  (package / 'sub').mkdir(parents=True)
  (package / '__init__.py').write_text('from pkg import a\n')
  (package / 'a.py').write_text('import os\n\nfrom pkg.sub import b\n')
  (package / 'sub' / '__init__.py').write_text('')
  (package / 'sub' / 'b.py').write_text('from . import c\n')
  (package / 'sub' / 'c.py').write_text('def later():\n  from .. import a\n  return a\n')
  (package / 'd.py').write_text('from pkg.a import nothing\n')  # into the cycle, not part of it
  edges = graph(str(tmp_path), 'pkg')
  assert edges['pkg'] == {'pkg.a': 1} and edges['pkg.d'] == {'pkg.a': 1}
  assert edges['pkg.sub.c'] == {'pkg.a': 2}  # a submodule imported by `from package import`
  assert [describe(edges, c) for c in cycles(edges)] == [
      'pkg.a -> pkg.sub.b (line 3 of pkg.a) -> pkg.sub.c (line 1 of pkg.sub.b) '
      '-> pkg.a (line 2 of pkg.sub.c)']


def unexplained_deferred_imports(root: str, package: str) -> list[str]:
  """'file:line: import ...' for each import inside a function of `package` with no comment saying
  why it is deferred: on its line, on the line above, or on the first line of the run of import
  lines it belongs to (one comment for a group)."""
  found = []
  for file in modules(root, package).values():
    with open(file) as f:
      source = f.read()
    lines = source.splitlines()
    functions = [node for node in ast.walk(ast.parse(source))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    deferred = {n.lineno for node in functions for n in ast.walk(node)
                if isinstance(n, (ast.Import, ast.ImportFrom))}
    for line in sorted(deferred):
      first = line
      while first - 1 in deferred and '#' not in lines[first - 1]:
        first -= 1
      if '#' not in lines[first - 1] and not lines[first - 2].lstrip().startswith('#'):
        found.append(f'{os.path.relpath(file, root)}:{line}: {lines[line - 1].strip()}')
  return found


@pytest.mark.quick
def test_every_import_in_a_function_says_why_it_is_deferred():
  """Imports stand at the top of a module; one put in a function (TensorFlow loaded only when data
  are read, JAX only after aot's environment, an optional dependency) carries a comment saying
  why."""
  found = unexplained_deferred_imports(ROOT, PACKAGE)
  assert not found, ('imports in functions without a comment saying why (move them to the top, '
                     'or say why not):\n' + '\n'.join(found))


def test_an_unexplained_deferred_import_is_named(tmp_path):
  package = tmp_path / 'pkg'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'a.py').write_text(
      'import os\n\n\ndef f():\n  # deferred: heavy\n  import json\n  import csv\n'
      '  return json\n\n\n'
      'def g():\n  import re  # deferred: the point\n  import abc\n  return re\n\n\n'
      'def h():\n  x = 1\n  import glob\n  return glob, x\n')
  assert unexplained_deferred_imports(str(tmp_path), 'pkg') == ['pkg/a.py:19: import glob']
