#!/usr/bin/env python3
"""Run a ROS 2 XML launch file the way `ros2 launch` would, for the subset mobile_vla uses.

`launch` and `launch_ros` cannot be installed where ROS 2 comes from PyPI
wheels, so the tests and scripts/run.sh use this interpreter instead: it parses
the launch file, resolves `$(var ...)`, `$(find-pkg-share ...)` and `$(env ...)`
against the real colcon install, and builds the node's command as launch_ros
does (`[launch-prefix] <exec> --ros-args -r __node:=... -r __ns:=... --params-file ... -r a:=b`),
in the environment its `<set_env>` actions (with `if` / `unless`) give it,
and the command of every enabled `<executable>` (the optional recorder).
Two differences of form, with the same effect on the node: launch_ros writes
`<param name= value=>` entries to temporary params files where this passes
`-p name:=value`, and adds `-r __ns:=/` for an empty namespace where this adds
nothing.
Anything outside that subset is an error, so the launch file cannot drift into
something this interpreter silently ignores.

    launch_xml.py FILE [name:=value ...] [--print]   (--print: one `env K=V ... <exec> ...` per process)

With one process it becomes that process (exec); with several it starts them
all, passes SIGINT/SIGTERM on, and ends with the first one's exit code.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET

SUBST = re.compile(r"\$\(([a-z-]+)\s+([^)]*)\)")


class LaunchError(Exception):
    pass


def find_pkg_prefix(pkg: str) -> str:
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        if os.path.isfile(os.path.join(prefix, "share", "ament_index", "resource_index", "packages", pkg)):
            return prefix
    raise LaunchError(f"package '{pkg}' not found on AMENT_PREFIX_PATH")


def substitute(text: str, args: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        kind, arg = m.group(1), m.group(2).strip()
        if kind == "var":
            if arg not in args:
                raise LaunchError(f"undefined launch argument '{arg}'")
            return args[arg]
        if kind == "find-pkg-share":
            return os.path.join(find_pkg_prefix(arg), "share", arg)
        if kind == "env":
            name, _, default = arg.partition(" ")
            return os.environ.get(name, default)
        raise LaunchError(f"unsupported substitution $({kind} ...)")

    return SUBST.sub(one, text or "")


def enabled(el: ET.Element, args: dict[str, str]) -> bool:
    """launch's `if` / `unless` conditions (true/false, 1/0, case-insensitive)."""
    def truth(v: str) -> bool:
        v = substitute(v, args).strip().lower()
        if v not in ("true", "false", "1", "0"):
            raise LaunchError(f"condition '{v}' is not true or false")
        return v in ("true", "1")
    if el.get("if") is not None and not truth(el.get("if")):
        return False
    return not (el.get("unless") is not None and truth(el.get("unless")))


def node_commands(path: str, overrides: dict[str, str]) -> list[tuple[list[str], dict[str, str]]]:
    """The command line and environment of every <node> in the launch file."""
    root = ET.parse(path).getroot()
    if root.tag != "launch":
        raise LaunchError(f"{path}: root element is <{root.tag}>, expected <launch>")
    declared = {a.get("name") for a in root.iter("arg")}
    unknown = set(overrides) - declared
    if unknown:
        raise LaunchError(f"unknown launch arguments: {', '.join(sorted(unknown))}")
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    commands = []
    for el in root:
        if el.tag == "arg":
            name = el.get("name")
            if name in overrides:
                args[name] = overrides[name]
            elif el.get("default") is not None:
                args[name] = substitute(el.get("default"), args)
            else:
                raise LaunchError(f"launch argument '{name}' has no default and was not given")
        elif el.tag == "set_env":
            if enabled(el, args):
                env[el.get("name")] = substitute(el.get("value"), args)
        elif el.tag == "node":
            commands.append((node_command(el, args), dict(env)))
        elif el.tag == "executable":
            if enabled(el, args):
                commands.append((shlex.split(substitute(el.get("cmd"), args)), dict(env)))
        else:
            raise LaunchError(f"unsupported launch element <{el.tag}>")
    return commands


def node_command(el: ET.Element, args: dict[str, str]) -> list[str]:
    pkg = substitute(el.get("pkg"), args)
    exe = os.path.join(find_pkg_prefix(pkg), "lib", pkg, substitute(el.get("exec"), args))
    if not os.access(exe, os.X_OK):
        raise LaunchError(f"executable not found: {exe}")
    # launch_ros's launch-prefix (gdb, valgrind, heaptrack, ...): words put before the executable.
    cmd = [*shlex.split(substitute(el.get("launch-prefix"), args)), exe, "--ros-args"]
    if el.get("name"):
        cmd += ["-r", f"__node:={substitute(el.get('name'), args)}"]
    ns = substitute(el.get("namespace"), args)
    if ns:
        cmd += ["-r", f"__ns:={ns if ns.startswith('/') else '/' + ns}"]
    for child in el:
        if child.tag == "param" and child.get("from") is not None:
            cmd += ["--params-file", substitute(child.get("from"), args)]
        elif child.tag == "param":
            cmd += ["-p", f"{child.get('name')}:={substitute(child.get('value'), args)}"]
        elif child.tag == "remap":
            cmd += ["-r", f"{substitute(child.get('from'), args)}:={substitute(child.get('to'), args)}"]
        else:
            raise LaunchError(f"unsupported <node> child <{child.tag}>")
    return cmd


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path, rest = argv[0], argv[1:]
    only_print = "--print" in rest
    overrides = dict(a.split(":=", 1) for a in rest if ":=" in a)
    try:
        commands = node_commands(path, overrides)
    except LaunchError as e:
        print(f"launch_xml: {e}", file=sys.stderr)
        return 2
    if only_print:
        for c, env in commands:
            print(shlex.join(["env", *(f"{k}={v}" for k, v in env.items()), *c]))
        return 0
    for cmd, _ in commands:
        if shutil.which(cmd[0]) is None:
            print(f"launch_xml: '{cmd[0]}' not found (for `{shlex.join(cmd[:3])} ...`)", file=sys.stderr)
            return 2
    if len(commands) == 1:
        cmd, env = commands[0]
        os.execvpe(cmd[0], cmd, {**os.environ, **env})
    procs = [subprocess.Popen(cmd, env={**os.environ, **env}) for cmd, env in commands]

    def forward(sig, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [p.wait() for p in procs]
    return codes[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
