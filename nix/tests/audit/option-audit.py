#!/usr/bin/env python3
"""Option audit: every option path the lab's modules set must be declared upstream.

Input: the JSON of nix/tests/audit/eval-modules.nix (the settings of each module), and
allowlists whose lines are option paths (`*` = a list element, `<name>` = any attribute name;
text after whitespace is a note). microvm.* paths are checked against
data/microvm-options.txt (generated from the pinned microvm.nix); everything else against
data/nixos-options.txt (read in nixpkgs' module sources, file and commit named per line).
Settings keys starting with `test:` are arguments of testers.runNixOSTest: their top level is
checked against data/nixos-test-options.txt (or a fourth argument), and each `nodes.<name>` is a
NixOS module checked like the others, plus the test-only node options that list declares as
`nodes.<name>.<path>` (qemu-vm.nix's virtualisation.*).
A path matching an option is recorded and not descended into, unless the allowlist declares
sub-options below it (submodules, lists of submodules). Anything else fails, naming the path.
"""
import json
import os
import sys

TEST_OPTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "nixos-test-options.txt")
NODE = ("nodes", "<name>")


def load(path):
    out = []
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(tuple(line.split()[0].split(".")))
    return out


def seg_match(pat, seg):
    return pat == seg or pat in ("<name>", "*")


def matches(pattern, path):
    return len(pattern) == len(path) and all(seg_match(p, s) for p, s in zip(pattern, path))


def below(pattern, path):
    return len(pattern) > len(path) and all(seg_match(p, s) for p, s in zip(pattern, path))


def walk(value, path, options, used, errors, where):
    exact = any(matches(o, path) for o in options)
    deeper = any(below(o, path) for o in options)
    if exact:
        used.add(".".join(path))
    if deeper:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, path + (k,), options, used, errors, where)
            return
        if isinstance(value, list) and any(below(o, path) and o[len(path)] == "*" for o in options):
            for v in value:
                walk(v, path + ("*",), options, used, errors, where)
            return
    if not exact:
        errors.append(f"{where}: `{'.'.join(path)}` is not a declared option")


def check_module(cfg, microvm, nixos, used, errors, where):
    for top, value in cfg.items():
        opts = microvm if top == "microvm" else nixos
        walk(value, (top,), opts, used, errors, where)


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    settings = json.load(open(args[0]))
    microvm = load(args[1])
    nixos = load(args[2])
    tests = load(args[3] if len(args) > 3 else TEST_OPTIONS)
    test_top = [o for o in tests if o[:2] != NODE]
    node_only = [o[2:] for o in tests if o[:2] == NODE and len(o) > 2]
    used, errors = set(), []
    for module, cfg in sorted(settings.items()):
        if not module.startswith("test:"):
            check_module(cfg, microvm, nixos, used, errors, module)
            continue
        for top, value in cfg.items():
            if top == "nodes" and ("nodes",) in test_top and isinstance(value, dict):
                used.add("nodes")
                for node, node_cfg in sorted(value.items()):
                    check_module(node_cfg, microvm, nixos + node_only, used, errors, f"{module} node {node}")
            else:
                walk(value, (top,), test_top, used, errors, module)
    for e in errors:
        print("option audit:", e, file=sys.stderr)
    print(f"option audit: {len(used)} option paths set, {len(errors)} undeclared")
    if "-v" in sys.argv:
        print("\n".join(sorted(used)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
