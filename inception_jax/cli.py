"""The one convention of the package's commands, `python -m inception_jax.X`: absl flags.

A command is a module (or a package's `__main__.py`) with

- `define_flags(flag_values)`: its flags, with their help, defined on `flag_values` when the
  command runs and never on import: absl refuses a flag defined twice (two commands' `--model`,
  or a program that imports the module as a library and defines its own);
- `main(argv, FLAGS)`: the command, which reads its flags from `FLAGS` (the values that
  `define_flags` defined) and its positional arguments (predict's images, plot's workdirs,
  prepare's dataset) from `argv[1:]`; a command without them calls `flags_only(argv)`;
- at its end, `if __name__ == '__main__': cli.run(define_flags, main)`.

`run` parses the command line with absl: `--flag=value` or `--flag value`, flags before or after
the positional arguments, `--` before arguments that start with a dash. `--help` prints the
module's docstring (its usage) and every flag of the command with its help, and exits with status
0. A bad flag or an `errors.UserError` ends in a few lines on stderr and exit status 2 (a
`faults.Fault`, 75), without a traceback unless INCEPTION_JAX_TRACEBACK=1 (`errors.py`).

`call(module, args)` runs a command in this process, on flags of its own (tests, notebooks).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Sequence

from absl import app, flags

from inception_jax import errors

DefineFlags = Callable[[flags.FlagValues], None]
Main = Callable[[list[str], flags.FlagValues], Any]


def _main(main: Main, argv: list[str], flag_values: flags.FlagValues) -> Any:
  with errors.reported():
    return main(argv, flag_values)


def run(define_flags: DefineFlags, main: Main) -> None:
  """The `__main__` path of a command: its flags on absl's FLAGS, parsed, then `main`; exits with
  `main`'s return value (None: 0)."""
  define_flags(flags.FLAGS)
  app.run(lambda argv: _main(main, argv, flags.FLAGS), flags_parser=errors.parse_flags)


def flags_only(argv: Sequence[str]) -> None:
  """For a command without positional arguments: an error naming those given."""
  if len(argv) > 1:
    raise errors.ConfigError(f'Unexpected arguments: {" ".join(argv[1:])} (the command takes flags '
                             'only; --help lists them).')


def call(command: ModuleType, args: Sequence[Any]) -> Any:
  """Runs `command` (a module of this convention) in this process on `args`, its command line
  without the program's name, as `python -m` runs it but on flags of its own; returns what its
  `main` returns. A bad flag or a `UserError` exits as the command does (SystemExit, status 2)."""
  values = flags.FlagValues()
  command.define_flags(values)
  argv = errors.parse_flags([command.__name__, *map(str, args)], values)
  return _main(command.main, argv, values)
