#!/usr/bin/env python3
"""Every PromQL expression envlink ships, run against a real Prometheus scraping real envlink.

    ENVLINK_BIN=target/debug/envlink python3 tests/prometheus/live_check.py
    ENVLINK_BIN=... KUBECONFIG=/tmp/st/kubeconfig python3 tests/prometheus/live_check.py

Python 3.11, standard library only. Everything listens on 127.0.0.1.

1. Starts two envlink instances: `envlink serve --dev` (self-signed certificate, embedded
   Service catalog), or, when KUBECONFIG is set, `envlink serve --dev --kubeconfig
   $KUBECONFIG`, so the catalog comes from a real API server's Service watch.
2. Sends reviews from tests/fixtures/review/ that are patched, allowed, denied, invalid and
   answered with an HTTP error, to both, and keeps sending while Prometheus scrapes.
3. Starts Prometheus (`$PROMETHEUS`, else `prometheus` on PATH) with a temporary config and
   storage: job "envlink" scraping both metrics ports every second, and the rule file
   (deploy/monitoring/prometheus-rules.yaml) loaded, so Prometheus itself parses and
   evaluates the shipped rules.
4. Checks, one line per check:
   - every target is up and every rule loaded and evaluated with health "ok" (the rule
     count equals the `- alert:` entries of the file);
   - every alert expression (as Prometheus loaded it) and every dashboard expression
     (targets and template variables of charts/envlink/dashboards/envlink.json, with
     $job=envlink, $instance=.*, $__rate_interval=1m) runs through /api/v1/query without an
     error; a dashboard expression must also return data (a panel that stays empty against
     a busy envlink is broken), an alert expression need not (not firing is fine);
   - every selector in those expressions (metric name and label matchers, parsed out of the
     expression) matches series of envlink, and every label the expression, its legend or
     its alert annotations name (`by (...)`, `{{label}}`, `$labels.label`) is a label those
     series carry. A metric envlink does not export, or a label it does not set, fails.
5. Prints `N passed, M failed` and exits 1 on any failure. Prometheus that cannot start is a
   failure, never a skip.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "charts" / "envlink" / "dashboards" / "envlink.json"
FIXTURES = ROOT / "tests" / "fixtures" / "review"
JOB = "envlink"
INSTANCES = 2
SCRAPE_INTERVAL = "1s"
# What Grafana would substitute; 1m holds many samples at the 1 s scrape interval.
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                       "$job": JOB, "$instance": ".*"}
# (fixture, endpoint): together they produce every decision envlink counts.
REVIEWS = [
    ("mutate-pod-create.json", "mutate"),               # patched
    ("mutate-configmap.json", "mutate"),                # allowed
    ("mutate-pod-no-spec.json", "mutate"),              # invalid
    ("validate-deployment-clean.json", "validate"),     # allowed
    ("validate-deployment-gpu-shadow.json", "validate"),  # denied
    ("malformed.json", "mutate"),                       # error (HTTP 400)
    ("not-a-review.json", "validate"),                  # error (HTTP 400)
]


# ---------------------------------------------------------------------------------------
# results


@dataclass
class Results:
    passed: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, name: str, problems: list[str]) -> None:
        if problems:
            self.failed += 1
            self.failures.append(name)
            print(f"FAIL {name}")
            for p in problems:
                print(f"     {p}")
        else:
            self.passed += 1
            print(f"ok   {name}")


# ---------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Envlink:
    """One `envlink serve` process; its addresses come from its "envlink serving" line."""

    def __init__(self, binary: str, workdir: Path, index: int, kubeconfig: str | None):
        self.ca = workdir / f"envlink-{index}-ca.pem"
        args = [binary, "serve", "--dev", "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0", "--dev-ca-out", str(self.ca),
                "--log-format", "json"]
        if kubeconfig:
            args += ["--kubeconfig", kubeconfig]
        self.log: list[str] = []
        self.listen: str | None = None
        self.metrics: str | None = None
        self._serving = threading.Event()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "RUST_LOG": "info"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if str(v.get("message", "")).startswith("envlink serving"):
                self.listen, self.metrics = v.get("listen"), v.get("metrics")
                self._serving.set()
        self._serving.set()

    def wait_serving(self, timeout: float) -> None:
        self._serving.wait(timeout)
        if not (self.listen and self.metrics):
            raise RuntimeError("envlink did not start:\n" + "\n".join(self.log[-30:]))

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.metrics}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                last = f"{e.code} {e.read().decode(errors='replace').strip()}"
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        raise RuntimeError(f"envlink at {self.metrics} never became ready: {last}\n"
                           + "\n".join(self.log[-30:]))

    def review(self, fixture: str, endpoint: str) -> int:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        host, port = self.listen.rsplit(":", 1)
        body = (FIXTURES / fixture).read_bytes()
        req = urllib.request.Request(f"https://localhost:{port}/{endpoint}", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Prometheus:
    def __init__(self, binary: str, workdir: Path, targets: list[str], rules: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s",
                       "scrape_timeout": SCRAPE_INTERVAL},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
        }, indent=2))
        self.logfile = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.logfile.open("w"), stderr=subprocess.STDOUT)

    def log_tail(self) -> str:
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-30:])

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def api(self, path: str, params: dict[str, str] | list[tuple[str, str]] | None = None) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            # 400/422 carry the error as JSON ({"status": "error", "error": ...}).
            try:
                return json.loads(e.read())
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}"}

    def query(self, expr: str) -> dict:
        return self.api("query", {"query": expr})

    def series_labels(self, selector: str) -> list[dict[str, str]]:
        res = self.api("series", [("match[]", selector),
                                  ("start", str(time.time() - 300)), ("end", str(time.time()))])
        if res.get("status") != "success":
            raise RuntimeError(f"series {selector}: {res.get('error')}")
        return res["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------
# PromQL: selectors and label names, out of an expression


KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "atan2", "inf", "nan"}
# Aggregations may be followed by `by (...)` instead of `(`: never a metric here.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
                "count_values", "bottomk", "topk", "quantile"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<offset>[0-9]+(?:ms|s|m|h|d|w|y)(?:[0-9]+(?:ms|s|m|h|d|w|y))*(?![A-Za-z0-9_:.]))
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<duration>\[[^\]]*\])
  | (?P<number>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)
  | (?P<punct>[{}()\[\],@]|=~|!~|!=|==|<=|>=|[=<>+\-*/%^])
""", re.X)
MATCHER = re.compile(r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*,?""")


@dataclass
class Selector:
    metric: str | None
    matchers: list[tuple[str, str, str]]  # (label, op, quoted value)

    def text(self) -> str:
        inner = ",".join(f"{l}{op}{v}" for l, op, v in self.matchers)
        return f"{self.metric or ''}{{{inner}}}" if inner or not self.metric else self.metric


def tokenize(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def parse(expr: str) -> tuple[list[Selector], set[str]]:
    """The vector selectors of `expr` and the label names of its grouping clauses."""
    toks = tokenize(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "ident" and text.lower() in LABEL_LIST_KEYWORDS and nxt[1] == "(":
            j = i + 2
            while j < len(toks) and toks[j][1] != ")":
                if toks[j][0] == "ident":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "ident" and nxt[1] == "(":
            i += 1  # a function or an aggregation
            continue
        if kind == "ident" and (text.lower() in KEYWORDS or text in AGGREGATIONS):
            i += 1
            continue
        if kind == "ident" and nxt[1] == "{" or kind == "punct" and text == "{":
            metric = text if kind == "ident" else None
            j = i + 2 if kind == "ident" else i + 1
            body = []
            while j < len(toks) and toks[j][1] != "}":
                body.append(toks[j][1])
                j += 1
            selectors.append(Selector(metric, parse_matchers(" ".join(body))))
            i = j + 1
            continue
        if kind == "ident":
            selectors.append(Selector(text, []))
        i += 1
    return selectors, grouping


def parse_matchers(body: str) -> list[tuple[str, str, str]]:
    out, pos = [], 0
    # Tokens were joined with spaces: "job = \"envlink\" , decision = \"error\"".
    while pos < len(body.strip()):
        m = MATCHER.match(body, pos)
        if not m:
            raise ValueError(f"cannot parse label matchers {body!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    return out


# ---------------------------------------------------------------------------------------
# the checks


def check_expression(prom: Prometheus, name: str, expr: str, must_return_data: bool,
                     extra_labels: set[str]) -> list[str]:
    """Problems with one expression (empty: fine)."""
    problems: list[str] = []
    res = prom.query(expr)
    if res.get("status") != "success":
        return [f"query error: {res.get('errorType')}: {res.get('error')}", f"expr: {expr}"]
    result = res["data"]["result"]
    if must_return_data and not result:
        problems.append("returned no data")
    try:
        selectors, grouping = parse(expr)
    except ValueError as e:
        return [f"cannot parse the expression: {e}", f"expr: {expr}"]
    if not selectors:
        problems.append("names no envlink metric")
    carried: set[str] = set()
    for sel in selectors:
        if not (sel.metric or "").startswith("envlink_"):
            problems.append(f"selector {sel.text()} is not an envlink metric")
            continue
        series = prom.series_labels(sel.text())
        if not series:
            # Say which part is wrong: the metric, or a matcher.
            if not prom.series_labels(sel.metric):
                problems.append(f"metric {sel.metric} has no series: envlink does not export it")
            else:
                names = sorted({k for s in prom.series_labels(sel.metric) for k in s})
                problems.append(f"selector {sel.text()} matches no series "
                                f"({sel.metric} has labels {names})")
            continue
        for s in series:
            carried.update(s)
    wanted = (grouping | extra_labels) - {"__name__"}
    missing = sorted(l for l in wanted if l not in carried)
    if missing and carried:
        problems.append(f"label(s) {missing} are not set on the series of {[s.text() for s in selectors]}")
    if problems:
        problems.append(f"expr: {expr}")
    return problems


def dashboard_expressions(dashboard: dict) -> list[tuple[str, str, set[str]]]:
    """(name, expression, legend labels) of every panel target and query variable."""
    out = []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dashboard.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                legend = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", t.get("legendFormat", "")))
                out.append((f"dashboard panel {p.get('title')!r} {t.get('refId')}", t["expr"], legend))
    return out


def dashboard_variables(dashboard: dict) -> list[tuple[str, str, str]]:
    """(name, selector, label) of every label_values() query variable."""
    out = []
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q or "")
        if not m:
            raise ValueError(f"dashboard variable {v.get('name')}: unsupported query {q!r}")
        out.append((v["name"], m.group(1), m.group(2)))
    return out


def substitute(expr: str) -> str:
    # Longest names first: $__rate_interval before $__range, $instance before $i...
    for k in sorted(DASHBOARD_VARIABLES, key=len, reverse=True):
        expr = expr.replace(k, DASHBOARD_VARIABLES[k])
    if "$" in expr:
        raise ValueError(f"unknown dashboard variable in {expr!r}")
    return expr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=Path, default=RULES, help="Prometheus rule file")
    ap.add_argument("--dashboard", type=Path, default=DASHBOARD, help="Grafana dashboard JSON")
    a = ap.parse_args()
    binary = os.environ.get("ENVLINK_BIN") or str(ROOT / "target" / "debug" / "envlink")
    prometheus_bin = os.environ.get("PROMETHEUS") or shutil.which("prometheus")
    kubeconfig = os.environ.get("KUBECONFIG") or None
    results = Results()
    for env in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(env, None)  # loopback only; urllib would honour a proxy
    if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
        print(f"live_check: no envlink binary at {binary} (set ENVLINK_BIN)")
        print("0 passed, 1 failed")
        return 1
    if not prometheus_bin:
        print("live_check: no prometheus binary (apt-get install prometheus, or set PROMETHEUS)")
        print("0 passed, 1 failed")
        return 1
    mode = f"--kubeconfig {kubeconfig}" if kubeconfig else "--dev (embedded catalog)"
    print(f"live_check: {INSTANCES} x envlink serve {mode}; {prometheus_bin}")

    work = Path(tempfile.mkdtemp(prefix="envlink-prom-"))
    envlinks: list[Envlink] = []
    prom: Prometheus | None = None
    keep = False
    try:
        # -- envlink
        problems = []
        try:
            envlinks = [Envlink(binary, work, i, kubeconfig) for i in range(INSTANCES)]
            for e in envlinks:
                e.wait_serving(60)
            for e in envlinks:
                e.wait_ready(120)
        except RuntimeError as err:
            problems.append(str(err))
        results.check(f"{INSTANCES} envlink instances serve and are ready", problems)
        if problems:
            return finish(results)

        def send_reviews() -> list[str]:
            bad = []
            for e in envlinks:
                for fixture, endpoint in REVIEWS:
                    status = e.review(fixture, endpoint)
                    want = 400 if fixture in ("malformed.json", "not-a-review.json") else 200
                    if status != want:
                        bad.append(f"{fixture} -> /{endpoint}: HTTP {status}, expected {want}")
            return bad

        results.check("reviews of every decision answered", send_reviews())

        # -- Prometheus
        problems = []
        try:
            prom = Prometheus(prometheus_bin, work, [e.metrics for e in envlinks], a.rules.resolve())
            prom.wait_ready(60)
        except RuntimeError as err:
            problems.append(str(err))
        results.check("Prometheus starts with the rule file loaded", problems)
        if problems:
            keep = True
            return finish(results)

        # Keep traffic flowing while Prometheus collects samples, so rates are not zero.
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline:
            send_reviews()
            res = prom.query(f'min(count_over_time(envlink_catalog_ready{{job="{JOB}"}}[1m]))'
                             f' and on() count(up{{job="{JOB}"}} == 1) == {INSTANCES}')
            result = res.get("data", {}).get("result", [])
            if result and float(result[0]["value"][1]) >= 8:
                ready = True
                break
            time.sleep(0.5)
        for _ in range(3):  # a few more scrapes of the last reviews
            send_reviews()
            time.sleep(1)
        problems = [] if ready else [f"fewer than 8 samples from {INSTANCES} up targets after 90 s",
                                     json.dumps(prom.api("targets").get("data", {}), indent=1)[:3000]]
        results.check(f"Prometheus scrapes {INSTANCES} envlink targets (job={JOB})", problems)
        if not ready:
            keep = True
            return finish(results)

        # -- the checker itself: it must refuse what it is there to catch, or every "ok"
        # below would mean nothing.
        problems = []
        for bad, labels, why in [
            (f'envlink_no_such_metric{{job="{JOB}"}}', set(), "a metric envlink does not export"),
            (f'envlink_catalog_ready{{job="{JOB}",pod="x"}}', set(), "a matcher on a label it does not set"),
            (f'sum by (namespace) (envlink_catalog_services{{job="{JOB}"}})', set(), "a grouping label it does not set"),
            (f'envlink_catalog_services{{job="{JOB}"}}', {"pod"}, "a legend/annotation label it does not set"),
            (f'envlink_admission_requests_total{{job="{JOB}",decision="timeout"}}', set(), "a label value it never uses"),
        ]:
            if not check_expression(prom, "self-test", bad, False, labels):
                problems.append(f"not refused: {why}: {bad}")
        if check_expression(prom, "self-test", f'envlink_catalog_ready{{job="{JOB}"}}', True, {"instance"}):
            problems.append("a correct expression was refused")
        results.check("the checker refuses unknown metrics, labels and values", problems)

        # -- the rules as Prometheus loaded them
        rules = [r for g in prom.api("rules").get("data", {}).get("groups", []) for r in g["rules"]]
        in_file = len(re.findall(r"^\s*- alert:", a.rules.read_text(), re.M))
        problems = []
        if len(rules) != in_file or not rules:
            problems.append(f"Prometheus loaded {len(rules)} rules, the file has {in_file}")
        for r in rules:
            if r.get("health") != "ok":
                problems.append(f"{r.get('name')}: health {r.get('health')}: {r.get('lastError')}")
        results.check(f"{len(rules)} alert rules loaded and evaluated without error", problems)

        for r in rules:
            annotations = " ".join(r.get("annotations", {}).values())
            labels = set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", annotations))
            results.check(f"alert {r['name']}",
                          check_expression(prom, r["name"], r["query"], False, labels))

        # -- the dashboard
        dashboard = json.loads(a.dashboard.read_text())
        exprs = dashboard_expressions(dashboard)
        results.check(f"dashboard has expressions ({len(exprs)})",
                      [] if exprs else ["no panel target with an expr"])
        for name, expr, legend in exprs:
            try:
                concrete = substitute(expr)
            except ValueError as err:
                results.check(name, [str(err)])
                continue
            results.check(name, check_expression(prom, name, concrete, True, legend))
        for name, selector, label in dashboard_variables(dashboard):
            concrete = substitute(selector)
            problems = check_expression(prom, name, concrete, True, {label})
            results.check(f"dashboard variable ${name} = label_values({selector}, {label})", problems)
        return finish(results)
    finally:
        if prom:
            prom.stop()
        for e in envlinks:
            e.stop()
        if results.failed or keep:
            print(f"live_check: Prometheus config, log and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def finish(results: Results) -> int:
    print(f"{results.passed} passed, {results.failed} failed")
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
