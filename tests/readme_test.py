"""The top-level README against the repository (ctest `readme_test`, label unit).

Every shell code block in README.md must say, in a `<!-- doc-test: ... -->` line right before
it, how it is exercised: `covered by NAME...` (each NAME_test must be a ctest test defined in
the tree, which runs the same command) or `skip (REASON)` for what CI cannot do (a cluster,
root); a block without one fails. Every relative link and every backticked path that names a
file or directory of the tree must exist. And the README stays short: under 220 lines.

Usage: readme_test.py [ROOT]
"""
import os
import re
import sys
import unittest

ROOT = sys.argv.pop(1) if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))


def ctest_names():
    names = set()
    for directory, _, files in os.walk(ROOT):
        if "/build" in directory or "/.git" in directory:
            continue
        for f in files:
            if f == "CMakeLists.txt":
                with open(os.path.join(directory, f)) as text:
                    body = text.read()
                names.update(re.findall(r"add_test\(NAME\s+(\w+)", body))
                names.update(re.findall(r"ternps_test\((\w+)", body))
    return names


class ReadmeTest(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(ROOT, "README.md")) as f:
            self.lines = f.read().split("\n")

    def test_it_is_short(self):
        self.assertLess(len(self.lines), 220)

    def test_every_shell_block_says_how_it_is_exercised(self):
        tests = ctest_names()
        blocks = 0
        for i, line in enumerate(self.lines):
            if not re.match(r"^```(sh|bash|console|shell)\s*$", line):
                continue
            blocks += 1
            marker = self.lines[i - 1] if i > 0 else ""
            match = re.match(r"^<!-- doc-test: (covered by|skip) (.+) -->$", marker)
            self.assertIsNotNone(match, f"README.md:{i + 1}: a shell block without a doc-test "
                                        "marker on the line before it")
            if match.group(1) == "covered by":
                named = re.findall(r"\b(\w+_test)\b", match.group(2))
                self.assertTrue(named, f"README.md:{i}: 'covered by' names no test")
                for name in named:
                    self.assertIn(name, tests, f"README.md:{i}: no ctest test {name}")
            else:
                self.assertRegex(match.group(2), r"^\(.+\)$",
                                 f"README.md:{i}: skip needs a (reason)")
                for name in re.findall(r"\b(\w+_smoke|\w+_test)\b", match.group(2)):
                    self.assertIn(name, tests, f"README.md:{i}: no ctest test {name}")
        self.assertGreater(blocks, 0)

    def test_every_path_it_names_exists(self):
        text = "\n".join(self.lines)
        paths = set(re.findall(r"\]\(([^)#:]+)\)", text))  # relative links
        for candidate in re.findall(r"`([A-Za-z0-9_./-]+)`", text):
            top = candidate.split("/")[0]
            if "/" in candidate and top in {"proto", "common", "server", "worker", "deploy",
                                            "docker", "tests", ".ci"}:
                paths.add(candidate)
        self.assertTrue(paths)
        for path in sorted(paths):
            self.assertTrue(os.path.exists(os.path.join(ROOT, path)),
                            f"README.md names {path}, which does not exist")


if __name__ == "__main__":
    unittest.main()
