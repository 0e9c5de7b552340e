#!/usr/bin/env python3
"""The real Helm CLI (v4) for envlink's chart tests: a thin wrapper around the `helm` binary.

Why this shape: `tests/e2e/testbed.sh build-helm` builds `helm` from the Go module proxy
(helm.sh/helm/v4/cmd/helm at a pinned version) and caches it in
~/.cache/envlink-testbed/helm-<version>/helm. The tests call that binary exactly as an
operator would (`helm lint`, `helm template`, `helm install`, `upgrade`, `rollback`,
`uninstall`, `test`, `status`, `get manifest`); this module only runs it, raises HelmError
with Helm's own message when it fails, and parses `-o json` output.

Binary lookup, first hit wins:
  1. $ENVLINK_HELM (path to a helm binary)
  2. HELM= from `tests/e2e/testbed.sh paths` (the cached build; `helm.py setup` builds it)

Helm's own state (repository cache, config, plugins) lives in a private temporary directory
per process (HELM_CACHE_HOME/HELM_CONFIG_HOME/HELM_DATA_HOME), so nothing from the user's
home leaks in and nothing is left behind. The kubeconfig comes from --kubeconfig or
$KUBECONFIG.

Command line (for humans and scripts): `helm.py setup` builds/locates the binary and prints
its path and version; `helm.py ARGS...` runs `helm ARGS...` with the settings above.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTBED = HERE.parent / "e2e" / "testbed.sh"


class HelmError(RuntimeError):
    """A Helm command failed; the message is Helm's own (its stderr)."""


class ReleaseNotFound(HelmError):
    """The named release does not exist."""


_helm: str | None = None
_home: str | None = None


def find_helm(build: bool = False) -> str:
    """The helm binary; with build=True, builds it first if it is not cached."""
    global _helm
    if _helm:
        return _helm
    env = os.environ.get("ENVLINK_HELM")
    if env:
        if not os.access(env, os.X_OK):
            raise HelmError(f"ENVLINK_HELM={env} is not an executable")
        _helm = env
        return env
    if build:
        subprocess.run(["bash", str(TESTBED), "build-helm"], check=True)
    out = subprocess.run(["bash", str(TESTBED), "paths"], check=True, capture_output=True,
                         text=True).stdout
    path = next((l.split("=", 1)[1] for l in out.splitlines() if l.startswith("HELM=")), "")
    if not path or not os.access(path, os.X_OK):
        raise HelmError(f"helm not built at {path!r}: run `bash tests/e2e/testbed.sh build-helm` "
                        "(or `python3 tests/helm/helm.py setup`)")
    _helm = path
    return path


def _env() -> dict[str, str]:
    global _home
    if _home is None:
        _home = tempfile.mkdtemp(prefix="envlink-helm-home-")
        atexit.register(shutil.rmtree, _home, True)
    return {**os.environ, "HELM_CACHE_HOME": f"{_home}/cache", "HELM_CONFIG_HOME": f"{_home}/config",
            "HELM_DATA_HOME": f"{_home}/data"}


def run(*args: str, check: bool = True, stdin: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs `helm ARGS...`; raises HelmError (ReleaseNotFound for a missing release) on failure."""
    p = subprocess.run([find_helm(), *args], capture_output=True, text=True, input=stdin,
                       env=_env(), timeout=timeout)
    if check and p.returncode != 0:
        msg = f"helm {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}"
        if re.search(r"release: not found|release .* not found|not found", p.stderr) and \
                args and args[0] in ("uninstall", "status", "rollback", "history", "get", "test"):
            raise ReleaseNotFound(msg)
        raise HelmError(msg)
    return p


def version() -> str:
    return run("version", "--short").stdout.strip()


# Lint output lines: "[INFO] Chart.yaml: icon is recommended", "[WARNING] templates/x.yaml: ..."
_LINT_LINE = re.compile(r"^\[(INFO|WARNING|ERROR)\]\s+(.*)$")


def lint_messages(output: str) -> list[tuple[str, str]]:
    """(severity, text) for every message `helm lint` printed."""
    return [(m.group(1), m.group(2)) for m in map(_LINT_LINE.match, output.splitlines()) if m]


class Helm:
    """Helm commands for one namespace and kubeconfig (like `helm -n NS --kubeconfig K`)."""

    def __init__(self, namespace: str = "default", kubeconfig: str | None = None) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")

    def __enter__(self) -> "Helm":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _global(self) -> list[str]:
        g = ["--namespace", self.namespace]
        if self.kubeconfig:
            g += ["--kubeconfig", self.kubeconfig]
        return g

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(*args, *self._global(), check=check, timeout=timeout)

    @staticmethod
    def _values_args(values: dict[str, Any] | None, tmp: str) -> list[str]:
        if not values:
            return []
        f = Path(tmp, "values.json")   # JSON is YAML: exact types, no quoting surprises
        f.write_text(json.dumps(values))
        return ["-f", str(f)]

    # -- client-only ------------------------------------------------------------------------

    def lint(self, chart: str, values: dict[str, Any] | None = None,
             strict: bool = False) -> subprocess.CompletedProcess[str]:
        """`helm lint CHART`; the CompletedProcess (rc, and the messages in stdout)."""
        with tempfile.TemporaryDirectory() as d:
            return run("lint", chart, *self._values_args(values, d), *(["--strict"] if strict else []),
                       check=False)

    def template(self, release: str, chart: str, values: dict[str, Any] | None = None,
                 *extra: str) -> str:
        """`helm template` (client-only rendering, no cluster); the manifest stream."""
        with tempfile.TemporaryDirectory() as d:
            return run("template", release, chart, "--namespace", self.namespace,
                       *self._values_args(values, d), *extra).stdout

    # -- release actions --------------------------------------------------------------------

    def install(self, release: str, chart: str, values: dict[str, Any] | None = None, *,
                create_namespace: bool = False, timeout: str = "2m") -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as d:
            args = ["install", release, chart, *self._values_args(values, d), "--timeout", timeout,
                    "-o", "json"]
            if create_namespace:
                args.append("--create-namespace")
            return json.loads(self.run(*args).stdout)

    def upgrade(self, release: str, chart: str, values: dict[str, Any] | None = None, *,
                install: bool = False, reuse_values: bool = False, reset_values: bool = False,
                timeout: str = "2m") -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as d:
            args = ["upgrade", release, chart, *self._values_args(values, d), "--timeout", timeout,
                    "-o", "json"]
            if install:
                args.append("--install")
            if reuse_values:
                args.append("--reuse-values")
            if reset_values:
                args.append("--reset-values")
            return json.loads(self.run(*args).stdout)

    def rollback(self, release: str, revision: int | None = None) -> str:
        args = ["rollback", release] + ([str(revision)] if revision is not None else [])
        return self.run(*args).stdout

    def uninstall(self, release: str) -> str:
        return self.run("uninstall", release).stdout

    def test(self, release: str, timeout: str = "30s") -> subprocess.CompletedProcess[str]:
        """`helm test RELEASE`; the CompletedProcess, not checked (the caller asserts)."""
        return self.run("test", release, "--timeout", timeout, check=False)

    def status(self, release: str) -> dict[str, Any]:
        return json.loads(self.run("status", release, "-o", "json").stdout)

    def history(self, release: str) -> list[dict[str, Any]]:
        return json.loads(self.run("history", release, "-o", "json").stdout)

    # Helm 4 has no `list --all`: every state filter at once lists releases in any state
    # (a failed install, too).
    _ALL_STATES = ("--deployed", "--failed", "--pending", "--superseded", "--uninstalled",
                   "--uninstalling")

    def list(self, all_releases: bool = True) -> list[dict[str, Any]]:
        args = self._ALL_STATES if all_releases else ()
        return json.loads(self.run("list", *args, "-o", "json").stdout) or []

    def get_values(self, release: str, all_values: bool = False) -> dict[str, Any]:
        return json.loads(self.run("get", "values", release, *(["--all"] if all_values else []),
                                   "-o", "json").stdout) or {}

    def get_manifest(self, release: str) -> str:
        """`helm get manifest`: the rendered manifest of the release's current revision."""
        return self.run("get", "manifest", release).stdout


def release_record(release: str, namespace: str, kubeconfig: str | None) -> dict[str, Any]:
    """The release's current revision as `helm status` reports it, plus its manifest."""
    h = Helm(namespace, kubeconfig)
    rec = h.status(release)
    rec["manifest"] = h.get_manifest(release)
    return rec


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["setup"]:
        try:
            print(find_helm(build=True))
            print(version())
        except (HelmError, subprocess.CalledProcessError) as e:
            print(f"helm.py setup: {e}", file=sys.stderr)
            return 1
        return 0
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    p = subprocess.run([find_helm(), *argv], env=_env())
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
