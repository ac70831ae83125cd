"""``labrun completion bash|zsh|fish``: a completion script for the shell, made from the parser itself (so
a new command or option completes without an edit here), and ``labrun completion --runs``: the run names
the scripts offer after ``show``, ``logs``, ``cancel``... (one quick GET /runs, a short timeout, silence on
any error: a slow or absent server must never hang the shell's Tab).

Install: ``labrun completion bash > ~/.local/share/bash-completion/completions/labrun``,
``labrun completion zsh > "${fpath[1]}/_labrun"``, ``labrun completion fish > ~/.config/fish/completions/labrun.fish``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from labrun import userconfig
from labrun.client import EXIT_INVALID, EXIT_OK, CliError

SHELLS = ("bash", "zsh", "fish")
RUNS_TIMEOUT_S = 1.0
RUNS_LISTED = 200  # the newest ones: enough to pick from, small enough for a Tab


@dataclass
class Command:
    name: str
    help: str
    options: list[str] = field(default_factory=list)
    takes_runs: bool = False  # a positional argument is a run's name


@dataclass
class Grammar:
    commands: list[Command]
    global_options: list[str]
    value_options: list[str]  # options followed by a value (that value is not a command)


def grammar(parser: argparse.ArgumentParser) -> Grammar:
    """Commands, their options, and which take run names, read from ``labrun``'s parser."""
    commands: list[Command] = []
    values: set[str] = set()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {c.dest: c.help or "" for c in subparsers[0]._choices_actions} if subparsers else {}
    for name, sub in subparsers[0].choices.items() if subparsers else []:
        command = Command(name, helps.get(name, ""))
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue
            command.options += [o for o in action.option_strings if o.startswith("--")]
            if action.option_strings and action.nargs != 0:
                values.update(action.option_strings)
            if not action.option_strings and (action.metavar or "") == "NAME":
                command.takes_runs = True
        commands.append(command)
    top = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    return Grammar(commands, top, sorted(values))


def script(shell: str, g: Grammar) -> str:
    if shell == "bash":
        return _bash(g)
    if shell == "zsh":
        return _zsh(g)
    return _fish(g)


def _words(items: list[str]) -> str:
    return " ".join(items)


def _find_command(start: str, current: str, words: str) -> str:
    """Shell code (bash and zsh alike) that sets ``cmd`` to the first word that is neither an option nor an
    option's value."""
    return f"""  local cmd="" i skip=0
  for ((i={start}; i<{current}; i++)); do
    if ((skip)); then skip=0; continue; fi
    case "${{{words}[i]}}" in
      --*=*) ;;
      {{VALUE_OPTIONS}}) skip=1 ;;
      -*) ;;
      *) cmd="${{{words}[i]}}"; break ;;
    esac
  done"""


def _bash(g: Grammar) -> str:
    cases = "\n".join(f'    {c.name}) opts="{_words(c.options)}" ;;' for c in g.commands)
    runs = "|".join(c.name for c in g.commands if c.takes_runs) or "_none_"
    finder = _find_command("1", "COMP_CWORD", "COMP_WORDS").replace(
        "{VALUE_OPTIONS}", "|".join(g.value_options)
    )
    return f"""# labrun completion for bash: `labrun completion bash > ~/.local/share/bash-completion/completions/labrun`
_labrun() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" opts=""
{finder}
  if [[ -z $cmd ]]; then
    COMPREPLY=( $(compgen -W "{_words([c.name for c in g.commands])} {_words(g.global_options)}" -- "$cur") )
    return
  fi
  case "$cmd" in
{cases}
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=( $(compgen -W "$opts" -- "$cur") )
    return
  fi
  case "$cmd" in
    {runs}) COMPREPLY=( $(compgen -W "$(command labrun completion --runs 2>/dev/null)" -- "$cur") ) ;;
    completion) COMPREPLY=( $(compgen -W "{_words(list(SHELLS))}" -- "$cur") ) ;;
  esac
}}
complete -o default -F _labrun labrun
"""


def _zsh(g: Grammar) -> str:
    commands = "\n".join(f"    '{c.name}:{_zsh_quote(c.help)}'" for c in g.commands)
    cases = "\n".join(f"    {c.name}) opts=({_words(c.options)}) ;;" for c in g.commands)
    runs = "|".join(c.name for c in g.commands if c.takes_runs) or "_none_"
    finder = _find_command("2", "CURRENT", "words").replace("{VALUE_OPTIONS}", "|".join(g.value_options))
    return f"""#compdef labrun
# labrun completion for zsh: `labrun completion zsh > "${{fpath[1]}}/_labrun"`, then a new shell
_labrun() {{
  local -a commands opts
  commands=(
{commands}
  )
{finder}
  if [[ -z $cmd ]]; then
    if [[ $PREFIX == -* ]]; then compadd -- {_words(g.global_options)}; else _describe command commands; fi
    return
  fi
  case $cmd in
{cases}
  esac
  if [[ $PREFIX == -* ]]; then
    compadd -- $opts
    return
  fi
  case $cmd in
    {runs}) compadd -- ${{(f)"$(command labrun completion --runs 2>/dev/null)"}} ;;
    completion) compadd -- {_words(list(SHELLS))} ;;
    *) _files ;;
  esac
}}
compdef _labrun labrun
"""


def _zsh_quote(text: str) -> str:
    return text.replace("'", "'\\''").replace(":", "\\:")


def _fish(g: Grammar) -> str:
    names = _words([c.name for c in g.commands])
    lines = [
        "# labrun completion for fish: `labrun completion fish > ~/.config/fish/completions/labrun.fish`",
        "complete -c labrun -f",
    ]
    for c in g.commands:
        lines.append(
            f"complete -c labrun -n 'not __fish_seen_subcommand_from {names}' -a {c.name} -d {_fish_quote(c.help)}"
        )
        for option in c.options:
            lines.append(f"complete -c labrun -n '__fish_seen_subcommand_from {c.name}' -l {option[2:]}")
    with_runs = _words([c.name for c in g.commands if c.takes_runs])
    if with_runs:
        lines.append(
            f"complete -c labrun -n '__fish_seen_subcommand_from {with_runs}' "
            "-a '(command labrun completion --runs 2>/dev/null)'"
        )
    lines.append(
        f"complete -c labrun -n '__fish_seen_subcommand_from completion' -a '{_words(list(SHELLS))}'"
    )
    return "\n".join(lines) + "\n"


def _fish_quote(text: str) -> str:
    return "'" + text[:80].replace("\\", "\\\\").replace("'", "\\'") + "'"


def add_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "completion",
        cmd_completion,
        "print a shell completion script (commands, options, run names) for bash, zsh or fish",
        epilog="bash: labrun completion bash > ~/.local/share/bash-completion/completions/labrun\n"
        'zsh:  labrun completion zsh > "${fpath[1]}/_labrun"\n'
        "fish: labrun completion fish > ~/.config/fish/completions/labrun.fish",
    )
    p.add_argument("shell", nargs="?", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    p.add_argument("--runs", action="store_true", help=argparse.SUPPRESS)  # what the scripts call on Tab
    p.set_defaults(local=cmd_completion)


def cmd_completion(args: argparse.Namespace, creds: userconfig.Credentials, _timeout: float) -> int:
    if args.runs:
        print("\n".join(run_names(creds)))
        return EXIT_OK
    if not args.shell:
        raise CliError("which shell? `labrun completion bash`, `zsh` or `fish`", EXIT_INVALID)
    from labrun.cli import build_parser  # the parser describes itself: the script follows every new option

    sys.stdout.write(script(args.shell, grammar(build_parser())))
    return EXIT_OK


def run_names(creds: userconfig.Credentials) -> list[str]:
    """The newest runs' names; none when the server is slow, absent or refuses (a Tab must not hang or
    print errors). The standard library's client: httpx would cost more start-up than the request."""
    import urllib.request  # here, not at the top: `labrun --help` and every command start without it

    request = urllib.request.Request(f"{creds.url.rstrip('/')}/runs?limit={RUNS_LISTED}")
    request.add_header("User-Agent", "labrun-cli")
    if creds.token:
        request.add_header("Authorization", f"Bearer {creds.token}")
    try:
        with urllib.request.urlopen(request, timeout=RUNS_TIMEOUT_S) as response:
            body = json.load(response)
        return [str(run["name"]) for run in body.get("data", [])]
    except Exception:  # anything at all: no completions, never a traceback on a Tab
        return []
