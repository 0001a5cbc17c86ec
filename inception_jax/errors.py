"""Errors whose message is the whole story, and how the programs report them.

A `UserError` says what is wrong, where, and the fix; the commands (every `python -m
inception_jax.X`, run by `inception_jax.cli`) print its message alone, as `error: ...` on stderr,
and exit with status 2 (a `faults.Fault`, 75): no traceback around it. `INCEPTION_JAX_TRACEBACK=1`
brings the traceback back (for a bug report). For the Python API they are ordinary exceptions:
`ConfigError` is a `ValueError`, `MissingError` a `FileNotFoundError`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Sequence

from absl import flags
from ml_collections import config_flags

TRACEBACK = 'INCEPTION_JAX_TRACEBACK'
EXIT_STATUS = 2


class UserError(Exception):
  """An error that the person running the program puts right, and whose message says how: a
  setting, a flag or a file to change (`ConfigError`, `MissingError`), or, for a `faults.Fault`,
  something outside the settings (a full disk, a lost process) to see to before rerunning."""


class ConfigError(UserError, ValueError):
  """A setting (config field, flag or option) that cannot work."""


class MissingError(UserError, FileNotFoundError):
  """A file or directory a setting points to that is absent or holds the wrong thing."""


def chain(error: BaseException) -> list[BaseException]:
  """`error` and the exceptions it wraps, outermost first (ml_collections wraps a KeyError as the
  argument of an AttributeError, absl chains them)."""
  errors = []
  while error is not None and error not in errors:
    errors.append(error)
    if error.args and isinstance(error.args[0], BaseException):
      error = error.args[0]
    else:
      error = error.__cause__ or error.__context__
  return errors


def first_line(error: BaseException, limit: int = 300, *, text: str | None = None,
               default: str | None = None) -> str:
  """The first line of `error`'s message, or of `text` where the caller has a better one (e.g.
  TensorFlow's `message`, without the op's prefix): at most `limit` characters, a colon that
  introduced the lines cut off dropped. Without any text: `default`, or the error type's name."""
  text = (str(error) if text is None else text).strip()
  if not text:
    return type(error).__name__ if default is None else default
  return text.splitlines()[0][:limit].rstrip(':')


def _message(error: BaseException) -> str:
  if len(error.args) == 1 and isinstance(error.args[0], str):
    return error.args[0].strip()  # str() of a KeyError would quote and escape it
  return str(error).strip()


def flag_error(error: BaseException, argv: Sequence[str] = ()) -> str:
  """One or two lines for an error in the command line or in the config file it names."""
  errors = chain(error)
  messages = [_message(e) for e in errors]
  hints = [m for m in messages if 'Did you mean' in m and '\n' in m]  # unescaped ones
  if hints or isinstance(errors[-1], KeyError):
    # A config override naming no field: "'bach_size'\nDid you mean "batch_size" instead of ...".
    key = _message(errors[-1]).strip("'")
    given = [a.split('=', 1)[0] for a in argv
             if a.startswith('--config.') and a.split('=', 1)[0].endswith('.' + key)]
    field = given[0] if given else key
    hint = hints[0].partition('\n')[2] if hints else ''
    return f'{field}: the config has no such field. {hint}'.strip()
  # Errors raised in a config file arrive with its traceback pasted into the message: the
  # innermost exception has the message alone.
  message = next((m for m in messages if 'Traceback (most recent call last)' not in m), '')
  message = message or messages[-1]
  if isinstance(errors[-1], ImportError) and ('configs' in message or 'relative' in message):
    message += (' (a config file outside the package\'s configs/ imports them as '
                'inception_jax.configs: from inception_jax.configs import default)')
  return message


def fail(message: str, status: int = EXIT_STATUS, at_once: bool = False) -> None:
  """Prints `error: message` on stderr and exits with `status`; `at_once` skips the interpreter's
  shutdown (`os._exit`: for faults, see `inception_jax.faults`)."""
  sys.stdout.flush()
  sys.stderr.write(f'error: {message}\n({TRACEBACK}=1 shows the traceback.)\n')
  sys.stderr.flush()
  if at_once:
    os._exit(status)  # pylint: disable=protected-access
  sys.exit(status)


def show_traceback() -> bool:
  return os.environ.get(TRACEBACK) == '1'


@contextlib.contextmanager
def reported() -> Iterator[None]:
  """Turns a `UserError` raised inside into `fail(message)`, unless tracebacks are asked for."""
  try:
    yield
  except UserError as e:
    if show_traceback():
      raise
    status = getattr(e, 'exit_status', None)  # a fault (inception_jax.faults) has its own
    fail(str(e), status or EXIT_STATUS, at_once=status is not None or joined_others())


def joined_others() -> bool:
  """Whether this process joined others through JAX's distributed client: its normal exit would
  wait in the client's shutdown barrier for processes that may be waiting for it (an error met by
  one host alone), so the programs exit at once instead."""
  module = sys.modules.get('jax._src.distributed')
  state = getattr(module, 'global_state', None)
  return getattr(state, 'client', None) is not None


# absl's flags that print the usage and exit (with status 1): asking for help is no failure.
HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?')


def parse_flags(argv: list[str], flag_values=None) -> list[str]:
  """absl's flag parsing (for `app.run(main, flags_parser=parse_flags)`; of `flag_values`, default
  absl's FLAGS), with a bad flag, a bad config override (e.g. a misspelt field) or an error in the
  config file in one or two lines; `--help` and its kind exit with status 0."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    remaining = flag_values(argv)
    for name in flag_values:
      flag = flag_values[name]
      if flag.value is not None and type(flag.value).__name__ == '_ErrorConfig':
        # ml_collections defers a config file's load error to its first use.
          raise FileNotFoundError(f'--{name}={config_flags.get_config_filename(flag)}: no such '
                                  'config file (paths are relative to the current directory).')
    return remaining
  except SystemExit as e:
    asked = any(a.lstrip('-').partition('=')[0] in HELP_FLAGS for a in argv[1:])
    sys.exit(0 if asked and e.code == 1 else e.code)
  except Exception as e:  # pylint: disable=broad-except
    if show_traceback():
      raise
    fail(flag_error(e, argv))
