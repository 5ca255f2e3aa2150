"""The wheel: built from a copy of the tree, installed elsewhere, twistd finds the plugin and the schemas."""

from __future__ import annotations

import os
import re
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_COUNT = 78
# What the twistd console script does; ``python -m twisted.scripts.twistd`` would run nothing.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"

# Not part of a source tree: local environments, caches and earlier build output.
_IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    ".run",
    "_trial_temp*",
    ".ruff_cache",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    "dropin.cache",
    "bench",
)


class WheelTests(TestCase):
    """A plain, non-editable install works from any directory, as issue 2's packaging section asks."""

    timeout = 300  # builds in an isolated environment, which may download setuptools

    @inlineCallbacks
    def run_python(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
        """Run this interpreter with ``args``; fail the test, showing the output, unless it exits 0."""
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, args, env=env if env is not None else dict(os.environ), path=str(cwd)
        )
        text = out.decode("utf-8", "replace")
        if code != 0:
            self.fail(
                f"{' '.join(args)} exited {code}\n--- stdout\n{text[-3000:]}\n"
                f"--- stderr\n{err.decode('utf-8', 'replace')[-3000:]}"
            )
        return text

    @inlineCallbacks
    def test_wheel_install_and_twistd(self) -> Any:
        """The wheel holds the plugin and all schemas but no ``twisted/__init__.py``; installed with
        ``pip --target`` and run from another directory, twistd lists ``ocppgw`` and the shipped
        schemas are found inside the installed package."""
        tmp = Path(self.mktemp()).absolute()
        source = tmp / "src"
        shutil.copytree(ROOT, source, ignore=_IGNORED)
        dist = tmp / "dist"
        yield self.run_python("-m", "build", "--wheel", "--outdir", str(dist), str(source), cwd=tmp)
        wheels = list(dist.glob("ocppgw-*.whl"))
        self.assertEqual(len(wheels), 1, wheels)
        wheel = wheels[0]

        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        self.assertIn("twisted/plugins/ocppgw_plugin.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertIn("ocppgw/tap.py", names)
        schemas = {name for name in names if re.fullmatch(r"ocppgw/schemas/[^/]+\.json", name)}
        self.assertEqual(len(schemas), SCHEMA_COUNT, sorted(schemas))
        shipped = {f"ocppgw/schemas/{path.name}" for path in (ROOT / "schemas").glob("*.json")}
        self.assertEqual(schemas, shipped)

        site = tmp / "site"
        yield self.run_python(
            "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel), cwd=tmp
        )
        # The dependencies come from this interpreter's site-packages; ocppgw only from the install.
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        env["PYTHONPATH"] = str(site)
        env["PYTHONDONTWRITEBYTECODE"] = "1"

        usage = yield self.run_python("-c", TWISTD, "--help", cwd=tmp, env=env)
        self.assertRegex(usage, r"(?m)^\s+ocppgw\s")

        command_usage = yield self.run_python("-c", TWISTD, "ocppgw", "--help", cwd=tmp, env=env)
        self.assertIn("--config", command_usage)

        where = yield self.run_python(
            "-c",
            "import ocppgw.tap, ocppgw.core.schemas as s;"
            " print(ocppgw.tap.__file__); print(s.shipped_schema_dir())",
            cwd=tmp,
            env=env,
        )
        module_file, schema_dir = where.splitlines()[-2:]
        self.assertTrue(Path(module_file).is_relative_to(site), module_file)
        self.assertEqual(Path(schema_dir).resolve(), (site / "ocppgw" / "schemas").resolve())
        self.assertEqual(len(list(Path(schema_dir).glob("*.json"))), SCHEMA_COUNT)
