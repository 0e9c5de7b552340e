#!/usr/bin/env python3
"""A real Helm (v4) for envlink's chart tests, driven through helm-sdkpy's shared library.

Why this shape: there is no `helm` binary on these machines and none can be downloaded, but
the PyPI package `helm-sdkpy` ships the Helm engine as a C shared library
(`helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so`). Its Python wrapper needs Python >= 3.12
and cffi; the library itself loads fine from Python 3.11 with `ctypes`, which is all this
module uses. The C signatures below are the ones in the wheel's `libhelm_sdkpy.h` and
`_ffi.py`.

Library lookup, first hit wins:
  1. $HELM_SDKPY_LIB (path to libhelm_sdkpy.so)
  2. an importable `helm_sdkpy` package (pip install helm-sdkpy on Python >= 3.12)
  3. $ENVLINK_HELM_CACHE (default ~/.cache/envlink-helm)/helm-sdkpy-<version>/
     — filled on first use with `pip install --no-deps --ignore-requires-python --target
     DIR helm-sdkpy==<version>`: the wheel is py3-none-any, only its metadata asks for 3.12,
     and nothing is installed into this interpreter's site-packages.

Command line (for humans and scripts):
  helm.py lint CHART
  helm.py install|upgrade RELEASE CHART [-n NS] [-f values.yaml]...
  helm.py manifest RELEASE [-n NS]      (prints the stored release manifest)
  helm.py values RELEASE [-n NS] [--all]
  helm.py uninstall RELEASE [-n NS]
The kubeconfig comes from --kubeconfig or $KUBECONFIG.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HELM_SDKPY_VERSION = "0.1.32"
_LIB_REL = Path("helm_sdkpy") / "_lib" / "linux-amd64" / "libhelm_sdkpy.so"


class HelmError(RuntimeError):
    """A Helm action failed; the message is Helm's own."""


class ReleaseNotFound(HelmError):
    """The named release does not exist."""


# Return codes of the native library (go/shim/main.go in helm-sdkpy).
_ERR_RELEASE_NOT_FOUND = -2


def _cache_dir() -> Path:
    root = os.environ.get("ENVLINK_HELM_CACHE") or str(Path.home() / ".cache" / "envlink-helm")
    return Path(root) / f"helm-sdkpy-{HELM_SDKPY_VERSION}"


def find_library(install: bool = True) -> Path:
    """Locates libhelm_sdkpy.so, installing the wheel into the cache if allowed."""
    env = os.environ.get("HELM_SDKPY_LIB")
    if env:
        if not Path(env).is_file():
            raise HelmError(f"HELM_SDKPY_LIB={env} does not exist")
        return Path(env)
    spec = importlib.util.find_spec("helm_sdkpy")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            cand = Path(loc) / "_lib" / "linux-amd64" / "libhelm_sdkpy.so"
            if cand.is_file():
                return cand
    cached = _cache_dir() / _LIB_REL
    if cached.is_file():
        return cached
    if not install:
        raise HelmError("libhelm_sdkpy.so not found (set HELM_SDKPY_LIB or run `helm.py setup`)")
    target = _cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
        "--ignore-requires-python", "--target", str(target),
        f"helm-sdkpy=={HELM_SDKPY_VERSION}",
    ]
    print("helm.py: installing helm-sdkpy:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    if not cached.is_file():
        raise HelmError(f"pip installed helm-sdkpy but {cached} is missing")
    return cached


_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    lib = ctypes.CDLL(str(find_library()))
    c = ctypes.c_char_p
    h = ctypes.c_ulonglong
    out = ctypes.POINTER(ctypes.c_void_p)  # char** filled by the library, freed with helm_sdkpy_free
    sigs = {
        "helm_sdkpy_last_error": ([], ctypes.c_char_p),  # owned by the library: never freed
        "helm_sdkpy_free": ([ctypes.c_void_p], None),
        "helm_sdkpy_version_string": ([], ctypes.c_void_p),
        "helm_sdkpy_config_create": ([c, c, c, c, ctypes.POINTER(h)], ctypes.c_int),
        "helm_sdkpy_config_destroy": ([h], None),
        "helm_sdkpy_lint": ([h, c, out], ctypes.c_int),
        "helm_sdkpy_install": ([h, c, c, c, c, c, out], ctypes.c_int),
        "helm_sdkpy_upgrade": ([h, c, c, c, c, c, out], ctypes.c_int),
        "helm_sdkpy_uninstall": ([h, c, ctypes.c_int, ctypes.c_int, out], ctypes.c_int),
        "helm_sdkpy_status": ([h, c, out], ctypes.c_int),
        "helm_sdkpy_get_values": ([h, c, ctypes.c_int, out], ctypes.c_int),
        "helm_sdkpy_list": ([h, ctypes.c_int, out], ctypes.c_int),
    }
    for name, (args, res) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    _lib = lib
    return lib


def _take_string(lib: ctypes.CDLL, ptr: ctypes.c_void_p) -> str:
    if not ptr.value:
        return ""
    try:
        return ctypes.string_at(ptr.value).decode("utf-8")
    finally:
        lib.helm_sdkpy_free(ptr.value)


def _check(lib: ctypes.CDLL, rc: int, what: str) -> None:
    if rc == 0:
        return
    # The message lives in the calling thread's error slot until its next native call.
    raw = lib.helm_sdkpy_last_error()
    msg = raw.decode("utf-8", "replace") if raw else "unknown error"
    if rc == _ERR_RELEASE_NOT_FOUND:
        raise ReleaseNotFound(f"{what}: {msg}")
    raise HelmError(f"{what}: {msg}")


def version() -> str:
    lib = _load()
    p = ctypes.c_void_p(lib.helm_sdkpy_version_string())
    return ctypes.string_at(p.value).decode() if p.value else "unknown"


def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode("utf-8")


class Helm:
    """One Helm action configuration: a namespace and a kubeconfig."""

    def __init__(self, namespace: str = "default", kubeconfig: str | None = None,
                 kubecontext: str | None = None):
        self.lib = _load()
        self.namespace = namespace
        self.kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
        handle = ctypes.c_ulonglong(0)
        rc = self.lib.helm_sdkpy_config_create(
            _b(namespace), _b(self.kubeconfig), _b(kubecontext), b"{}", ctypes.byref(handle))
        _check(self.lib, rc, "config_create")
        self.handle = handle.value

    def close(self) -> None:
        if self.handle:
            self.lib.helm_sdkpy_config_destroy(self.handle)
            self.handle = 0

    def __enter__(self) -> "Helm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json_call(self, fn: str, what: str, *args: Any) -> Any:
        out = ctypes.c_void_p()
        rc = getattr(self.lib, fn)(self.handle, *args, ctypes.byref(out))
        _check(self.lib, rc, what)
        text = _take_string(self.lib, out)
        return json.loads(text) if text else None

    # -- chart actions ---------------------------------------------------------------------

    def lint(self, chart: str) -> dict[str, Any]:
        """Runs `helm lint`. Returns the library's JSON result (see lint_summary)."""
        return self._json_call("helm_sdkpy_lint", f"lint {chart}", _b(chart))

    # -- release actions -------------------------------------------------------------------

    def _release(self, fn: str, verb: str, release: str, chart: str,
                 values: dict[str, Any] | None, options: dict[str, Any]) -> dict[str, Any]:
        return self._json_call(
            fn, f"{verb} {release}", _b(release), _b(chart),
            _b(json.dumps(values) if values else ""), b"", _b(json.dumps(options)))

    def install(self, release: str, chart: str, values: dict[str, Any] | None = None, *,
                wait: bool = False, timeout: int = 120, create_namespace: bool = False,
                skip_schema_validation: bool = False) -> dict[str, Any]:
        return self._release("helm_sdkpy_install", "install", release, chart, values, {
            "create_namespace": create_namespace, "wait": wait, "timeout_seconds": timeout,
            "wait_for_jobs": False, "server_side_apply": "false", "force_conflicts": False,
            "disable_openapi_validation": False, "skip_schema_validation": skip_schema_validation,
            "rollback_on_failure": False, "take_ownership": False,
        })

    def upgrade(self, release: str, chart: str, values: dict[str, Any] | None = None, *,
                wait: bool = False, timeout: int = 120, install: bool = False,
                reuse_values: bool = False, reset_values: bool = False) -> dict[str, Any]:
        return self._release("helm_sdkpy_upgrade", "upgrade", release, chart, values, {
            "install": install, "create_namespace": False, "wait": wait,
            "timeout_seconds": timeout, "wait_for_jobs": False, "max_history": 10,
            "server_side_apply": "auto", "force_conflicts": False,
            "disable_openapi_validation": False, "skip_schema_validation": False,
            "rollback_on_failure": False, "take_ownership": False, "cleanup_on_fail": False,
            "reset_values": reset_values, "reuse_values": reuse_values,
        })

    def uninstall(self, release: str, *, wait: bool = False, timeout: int = 120) -> Any:
        return self._json_call("helm_sdkpy_uninstall", f"uninstall {release}", _b(release),
                               1 if wait else 0, timeout)

    def status(self, release: str) -> dict[str, Any]:
        return self._json_call("helm_sdkpy_status", f"status {release}", _b(release))

    def get_values(self, release: str, all_values: bool = False) -> dict[str, Any]:
        return self._json_call("helm_sdkpy_get_values", f"get values {release}", _b(release),
                               1 if all_values else 0) or {}

    def list(self, all_releases: bool = True) -> list[dict[str, Any]]:
        return self._json_call("helm_sdkpy_list", "list", 1 if all_releases else 0) or []

    def get_manifest(self, release: str) -> str:
        """The rendered manifest Helm stored for the release's latest revision.

        Read from Helm's storage Secret (`sh.helm.release.v1.<name>.v<N>`, label
        owner=helm), exactly what `helm get manifest` prints: the library has no
        get-manifest call and no client-only `template`.
        """
        return release_record(release, self.namespace, self.kubeconfig)["manifest"]


def release_record(release: str, namespace: str, kubeconfig: str | None) -> dict[str, Any]:
    """Decodes the newest Helm release record stored for `release` (Secret driver)."""
    cmd = ["kubectl", "get", "secrets", "-n", namespace, "-o", "json",
           "-l", f"owner=helm,name={release}"]
    if kubeconfig:
        cmd[1:1] = ["--kubeconfig", kubeconfig]
    items = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["items"]
    if not items:
        raise ReleaseNotFound(f"no Helm release record for {release} in {namespace}")
    newest = max(items, key=lambda s: int(s["metadata"]["labels"].get("version", "0")))
    # Secret data is base64; Helm's payload inside is base64(gzip(json)).
    payload = base64.b64decode(base64.b64decode(newest["data"]["release"]))
    if payload[:2] == b"\x1f\x8b":
        payload = gzip.decompress(payload)
    return json.loads(payload)


def lint_summary(result: Any) -> dict[str, int]:
    """Counts lint messages by severity.

    The library returns each message as {"Severity", "Path", "Err"}, where "Err" is the Go
    error marshalled to JSON: a plain `errors.New` becomes `{}`, so most messages come back
    *without their text* (seen with helm-sdkpy 0.1.32). The honest summary is a count per
    severity; lint_lines() shows whatever text a message does carry.
    """
    counts = {"error": 0, "warning": 0, "info": 0, "unknown": 0}
    msgs: list[Any] = []
    if isinstance(result, dict):
        for key in ("messages", "Messages", "errors", "Errors"):
            if isinstance(result.get(key), list):
                msgs.extend(result[key])
    elif isinstance(result, list):
        msgs = result
    names = {1: "info", 2: "warning", 3: "error"}  # helm's support.Severity (0 = unknown)
    for m in msgs:
        sev = m.get("Severity", m.get("severity")) if isinstance(m, dict) else None
        if isinstance(sev, int):
            counts[names.get(sev, "unknown")] += 1
        elif isinstance(sev, str) and sev.lower() in counts:
            counts[sev.lower()] += 1
        else:
            counts["unknown"] += 1
    return counts


def lint_lines(result: Any) -> list[str]:
    """One line per lint message: severity, path and the error's fields (if any survived)."""
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    out = []
    for m in (result or {}).get("Messages") or []:
        err = m.get("Err")
        text = json.dumps(err, sort_keys=True) if err is not None else ""
        if text == "{}":
            text = "(message text not returned by the library)"
        out.append(f"[{names.get(m.get('Severity'), m.get('Severity'))}] {m.get('Path', '')}: {text}")
    return out


def _load_values(files: list[str]) -> dict[str, Any]:
    import yaml  # PyYAML: only needed for -f

    merged: dict[str, Any] = {}

    def merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v

    for f in files:
        merge(merged, yaml.safe_load(Path(f).read_text()) or {})
    return merged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="locate/install libhelm_sdkpy.so and print its path")
    p = sub.add_parser("lint")
    p.add_argument("chart")
    p.add_argument("--raw", action="store_true", help="print the library's JSON result")
    for verb in ("install", "upgrade"):
        p = sub.add_parser(verb)
        p.add_argument("release")
        p.add_argument("chart")
        p.add_argument("-n", "--namespace", default="default")
        p.add_argument("-f", "--values", action="append", default=[])
    for verb in ("manifest", "values", "uninstall", "status"):
        p = sub.add_parser(verb)
        p.add_argument("release")
        p.add_argument("-n", "--namespace", default="default")
        if verb == "values":
            p.add_argument("--all", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "setup":
            print(find_library())
            print("helm", version())
            return 0
        ns = getattr(a, "namespace", "default")
        with Helm(ns, a.kubeconfig) as h:
            if a.cmd == "lint":
                res = h.lint(a.chart)
                if a.raw:
                    print(json.dumps(res, indent=2))
                for line in lint_lines(res):
                    print(line)
                c = lint_summary(res)
                print(f"lint {a.chart}: {c['error']} error(s), {c['warning']} warning(s), "
                      f"{c['info']} info, {c['unknown']} unclassified")
                return 1 if c["error"] or c["warning"] or c["unknown"] else 0
            if a.cmd in ("install", "upgrade"):
                fn = h.install if a.cmd == "install" else h.upgrade
                res = fn(a.release, a.chart, _load_values(a.values))
                print(json.dumps({k: res.get(k) for k in ("name", "namespace", "version", "status")
                                  if isinstance(res, dict)}, indent=2))
            elif a.cmd == "manifest":
                sys.stdout.write(h.get_manifest(a.release))
            elif a.cmd == "values":
                print(json.dumps(h.get_values(a.release, a.all), indent=2))
            elif a.cmd == "status":
                print(json.dumps(h.status(a.release), indent=2))
            elif a.cmd == "uninstall":
                print(json.dumps(h.uninstall(a.release), indent=2))
    except HelmError as e:
        print(f"helm.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
