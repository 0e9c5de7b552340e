#!/usr/bin/env python3
"""End-to-end tests of `envlink audit` (and `envlink mutate --kubeconfig`) against a real
kube-apiserver (tests/e2e/testbed.sh: 1.20, or a newer one).

    KUBECONFIG=STATE/kubeconfig ENVLINK_BIN=target/debug/envlink python3 tests/e2e/audit_e2e.py

Standalone: only the Python standard library and kubectl. Run it while no envlink webhook
is registered (it checks): the planted objects are what admission never saw.

It creates its own namespaces (suffixed with a random id, labelled envlink-e2e-audit=<id>)
and plants, through the API server:

- audit-r-<id>: a Pod whose GPU container sets NVIDIA_VISIBLE_DEVICES, and a Deployment whose
  Pod template's init container does (reserved rule `nvidia-visible-devices`);
- audit-o-<id>: the ordering trap. Pod `early` (kubelet links) and Pod `named` (made by
  `envlink mutate --kubeconfig` under `onMissing: warn`, naming Service `late` in
  envlink.io/services) are created before Service `late`; Pod `later` after it;
- audit-s-<id>: Service `db`, then Pod `client` made by `envlink mutate --kubeconfig` (so it
  carries db's variables and envlink.io/injected), then `db` deleted and recreated with a
  new cluster IP;
- audit-c-<id>: clean: a Service, then a kubelet Pod, an injected Pod, a Pod with links off
  and a Deployment.

Then `envlink audit -o json`, `-o policyreport` and `-o table` (namespaced, and cluster-wide
with small pages) must report exactly the planted findings: reserved for the two objects
in audit-r, missing-service-variable LATE_SERVICE_HOST for `early` and `named`, four
stale-service-variable findings for `client` (the variables that hold the cluster IP), and
nothing in audit-c.

Output: `PASS name` / `FAIL name: reason` per test, then `N passed, M failed`; exit status 1
when anything failed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else "kubectl")
ENVLINK = os.environ.get("ENVLINK_BIN", "")
KUBECONFIG = os.environ.get("KUBECONFIG", "")
ID = secrets.token_hex(3)
NS_R, NS_O, NS_S, NS_C = (f"audit-{x}-{ID}" for x in ("r", "o", "s", "c"))
OURS = [NS_R, NS_O, NS_S, NS_C]
LABEL = "envlink-e2e-audit"
IMAGE = "registry.invalid/e2e:1"


class Fail(AssertionError):
    pass


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def run(cmd: list[str], stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=timeout)


def kubectl(*args: str, stdin: str | None = None) -> str:
    p = run([KUBECTL, *args], stdin=stdin)
    if p.returncode != 0:
        raise Fail(f"kubectl {' '.join(args)} failed (exit {p.returncode}): {p.stderr.strip()[:600]}")
    return p.stdout


def create(obj: dict[str, Any]) -> dict[str, Any]:
    return json.loads(kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(obj)))


def envlink(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run([ENVLINK, *args], stdin=stdin, timeout=300)


def container(name: str, env: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": IMAGE, "command": ["sleep", "3600"], **extra}
    if env is not None:
        c["env"] = env
    return c


def pod(name: str, ns: str, containers: list[dict[str, Any]], annotations: dict[str, str] | None = None,
        **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers, **spec}}


def service(name: str, ns: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": "ClusterIP", "ports": [{"name": "main", "port": port}]}}


def deployment(name: str, ns: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def injected_pod(obj: dict[str, Any], config: str | None = None) -> dict[str, Any]:
    """The Pod as envlink's webhook would have made it, from the live cluster's Services."""
    args = ["mutate", "--kubeconfig", KUBECONFIG, "-f", "-", "-o", "json"]
    if config:
        args += ["--config", config]
    p = envlink(*args, stdin=json.dumps(obj))
    check(p.returncode == 0, f"envlink mutate --kubeconfig failed (exit {p.returncode}): {p.stderr[-800:]}")
    return json.loads(p.stdout)


def second_tick() -> None:
    """creationTimestamp has one-second resolution: make the next object strictly newer."""
    time.sleep(1.2)


# ----------------------------------------------------------------------------------------
# planting

EXPECTED: set[tuple[str, str, str, str, str, str]] = set()
STALE_IPS: dict[str, str] = {}


def no_webhook_registered() -> None:
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        items = json.loads(kubectl("get", kind, "-o", "json"))["items"]
        for item in items:
            for hook in item.get("webhooks") or []:
                check(not hook.get("name", "").endswith("envlink.io"),
                      f"{kind} {item['metadata']['name']} registers envlink ({hook['name']}): run this "
                      "suite while no envlink webhook is registered")


def plant() -> None:
    no_webhook_registered()
    for ns in OURS:
        kubectl("create", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {LABEL: ID}}}))

    # Reserved: a Pod and a Deployment's template, created with no webhook to refuse them.
    create(pod("gpu-shadow", NS_R, [container(
        "train", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
        resources={"limits": {"nvidia.com/gpu": "1"}})]))
    create(deployment("shadow-deploy", NS_R, {
        "initContainers": [container("init", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"}])],
        "containers": [container("app")]}))
    EXPECTED.add(("reserved", "Pod", NS_R, "gpu-shadow", "train", "NVIDIA_VISIBLE_DEVICES"))
    EXPECTED.add(("reserved", "Deployment", NS_R, "shadow-deploy", "init", "NVIDIA_VISIBLE_DEVICES"))

    # Ordering: Pods older than the Service `late`.
    create(pod("early", NS_O, [container("app")]))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write("services: {onMissing: warn}\n")
        warn_config = f.name
    try:
        named = injected_pod(pod("named", NS_O, [container("app")], {"envlink.io/services": "late"}),
                             config=warn_config)
    finally:
        os.unlink(warn_config)
    check(named["metadata"]["annotations"].get("envlink.io/injected") == "kubernetes",
          f"mutate's record for a missing named Service: {named['metadata'].get('annotations')}")
    create(named)
    second_tick()
    create(service("late", NS_O, 8080))
    second_tick()
    create(pod("later", NS_O, [container("app")]))
    EXPECTED.add(("missing-service-variable", "Pod", NS_O, "early", "app", "LATE_SERVICE_HOST"))
    EXPECTED.add(("missing-service-variable", "Pod", NS_O, "named", "app", "LATE_SERVICE_HOST"))

    # Stale: an injected Pod, then its Service recreated with a new cluster IP.
    old_ip = create(service("db", NS_S, 5432))["spec"]["clusterIP"]
    client = injected_pod(pod("client", NS_S, [container("app")]))
    names = {e["name"]: e.get("value") for e in client["spec"]["containers"][0]["env"]}
    check(names.get("DB_SERVICE_HOST") == old_ip, f"mutate injected DB_SERVICE_HOST={names.get('DB_SERVICE_HOST')}, "
          f"the Service has {old_ip}")
    create(client)
    second_tick()
    new_ip = old_ip
    for _ in range(5):
        kubectl("delete", "service", "db", "-n", NS_S)
        new_ip = create(service("db", NS_S, 5432))["spec"]["clusterIP"]
        if new_ip != old_ip:
            break
    check(new_ip != old_ip, "the recreated Service kept its cluster IP five times")
    STALE_IPS.update(old=old_ip, new=new_ip)
    for var in ("DB_SERVICE_HOST", "DB_PORT", "DB_PORT_5432_TCP", "DB_PORT_5432_TCP_ADDR"):
        EXPECTED.add(("stale-service-variable", "Pod", NS_S, "client", "app", var))

    # Clean: everything created after its Services, with the values they give.
    create(service("api", NS_C, 80))
    second_tick()
    create(pod("plain", NS_C, [container("app")]))
    create(injected_pod(pod("injected", NS_C, [container("app"), container("side")])))
    create(pod("unlinked", NS_C, [container("app")], enableServiceLinks=False))
    create(deployment("fine", NS_C, {"containers": [container("app", env=[{"name": "X", "value": "1"}])]}))


# ----------------------------------------------------------------------------------------
# helpers on audit output


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return envlink("audit", "--kubeconfig", KUBECONFIG, *args)


def namespaced(*args: str) -> subprocess.CompletedProcess[str]:
    ns_args: list[str] = []
    for ns in OURS:
        ns_args += ["-n", ns]
    return audit(*ns_args, *args)


def keys(findings: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str, str]]:
    return {(f["check"], f["kind"], f["namespace"], f["name"], f["container"], f["variable"]) for f in findings}


def diff(got: set[Any], want: set[Any]) -> str:
    return f"unexpected: {sorted(got - want)}; missing: {sorted(want - got)}"


# ----------------------------------------------------------------------------------------
# tests


def audit_json_reports_exactly_the_planted_findings() -> None:
    p = namespaced("-o", "json")
    check(p.returncode == 1, f"exit {p.returncode} (want 1: findings): {p.stderr[-600:]}")
    findings = json.loads(p.stdout)
    check(isinstance(findings, list), "-o json is not a list")
    for f in findings:
        check(set(f) == {"check", "kind", "namespace", "name", "container", "variable", "message"},
              f"finding fields: {sorted(f)}")
    got = keys(findings)
    check(got == EXPECTED, diff(got, EXPECTED))
    check(len(findings) == len(EXPECTED), f"{len(findings)} findings for {len(EXPECTED)} distinct ones")
    host = next(f for f in findings if f["variable"] == "DB_SERVICE_HOST")
    check(STALE_IPS["old"] in host["message"] and STALE_IPS["new"] in host["message"],
          f"the stale message names the Pod's value and today's: {host['message']}")
    late = next(f for f in findings if f["name"] == "named")
    check("envlink.io/services" in late["message"], f"named-Service message: {late['message']}")


def audit_policyreports_agree_with_json() -> None:
    p = namespaced("-o", "policyreport")
    check(p.returncode == 1, f"exit {p.returncode}: {p.stderr[-600:]}")
    doc = json.loads(p.stdout)
    check(doc.get("kind") == "List", "not a List")
    reports = {r["metadata"]["namespace"]: r for r in doc["items"]}
    check(set(reports) == set(OURS), f"one report per audited namespace: {sorted(reports)}")
    got = set()
    for ns, r in reports.items():
        check(r["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and r["kind"] == "PolicyReport", f"{ns}: {r['apiVersion']}")
        results = r.get("results") or []
        summary = r["summary"]
        check(summary["fail"] + summary["warn"] == len(results), f"{ns}: summary {summary} for {len(results)} results")
        for res in results:
            check(res["result"] == "fail" and res["source"] == "envlink", f"{ns}: {res}")
            check(res["message"], f"{ns}: empty message")
            (resource,) = res["resources"]
            got.add((res["policy"], resource["kind"], resource["namespace"], resource["name"],
                     res["properties"]["container"], res["properties"]["variable"]))
            check(resource.get("uid"), f"{ns}: resource without uid: {resource}")
    check(got == EXPECTED, diff(got, EXPECTED))
    check(not reports[NS_C].get("results"), f"clean namespace has results: {reports[NS_C].get('results')}")


def audit_cluster_wide_with_small_pages() -> None:
    p = audit("-o", "json", "--page-size", "2")
    check(p.returncode == 1, f"exit {p.returncode}: {p.stderr[-600:]}")
    got = {k for k in keys(json.loads(p.stdout)) if k[2] in OURS}
    check(got == EXPECTED, diff(got, EXPECTED))


def audit_clean_namespace_exits_0() -> None:
    p = audit("-n", NS_C, "-o", "json")
    check(p.returncode == 0, f"exit {p.returncode}: {p.stdout[:400]} {p.stderr[-400:]}")
    check(json.loads(p.stdout) == [], f"findings: {p.stdout[:400]}")
    t = audit("-n", NS_C)
    check(t.returncode == 0 and "no findings in 3 Pods and 1 workload of 1 namespace" in t.stdout,
          f"table: {t.stdout[-400:]}")


def audit_table_for_people() -> None:
    p = namespaced()
    check(p.returncode == 1, f"exit {p.returncode}")
    lines = p.stdout.strip().splitlines()
    check(lines[0].split()[:6] == ["CHECK", "KIND", "NAMESPACE", "NAME", "CONTAINER", "VARIABLE"], lines[0])
    check(len(lines) == len(EXPECTED) + 2, f"{len(lines)} lines for {len(EXPECTED)} findings")
    check(lines[-1].startswith(f"{len(EXPECTED)} findings"), lines[-1])


def audit_errors_exit_2() -> None:
    with tempfile.TemporaryDirectory() as d:
        bad = Path(d) / "kubeconfig"
        bad.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                       "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                       "current-context: x\n")
        p = envlink("audit", "--kubeconfig", str(bad))
    check(p.returncode == 2 and "cannot list services" in p.stderr, f"exit {p.returncode}: {p.stderr[-400:]}")


def mutate_directory_with_live_services() -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "sub").mkdir()
        (Path(d) / "deploy.json").write_text(json.dumps(deployment("web", NS_S, {"containers": [container("app")]})))
        (Path(d) / "sub" / "cron.json").write_text(json.dumps({
            "apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": NS_S},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "OnFailure", "containers": [container("job")]}}}}}}))
        p = envlink("mutate", "--kubeconfig", KUBECONFIG, "-f", d, "-o", "json")
    check(p.returncode == 0, f"exit {p.returncode}: {p.stderr[-600:]}")
    items = json.loads(p.stdout)["items"]
    check([i["kind"] for i in items] == ["Deployment", "CronJob"], [i["kind"] for i in items])
    templates = [items[0]["spec"]["template"], items[1]["spec"]["jobTemplate"]["spec"]["template"]]
    for t in templates:
        env = {e["name"]: e.get("value") for e in t["spec"]["containers"][0]["env"]}
        check(env.get("DB_SERVICE_HOST") == STALE_IPS["new"], f"DB_SERVICE_HOST={env.get('DB_SERVICE_HOST')}")
        check(t["metadata"]["annotations"]["envlink.io/injected"] == "db,kubernetes", t["metadata"])
        check(t["spec"]["enableServiceLinks"] is False, "enableServiceLinks")
    check("container app: " in p.stderr and "service variables of: db, kubernetes" in p.stderr,
          f"summary on stderr: {p.stderr[-600:]}")


POLICYREPORT_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "policyreports.wgpolicyk8s.io"},
    "spec": {"group": "wgpolicyk8s.io", "scope": "Namespaced",
             "names": {"kind": "PolicyReport", "listKind": "PolicyReportList", "plural": "policyreports",
                       "singular": "policyreport", "shortNames": ["polr"]},
             "versions": [{"name": "v1alpha2", "served": True, "storage": True,
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> str:
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            return r.read().decode()
    except OSError:
        return ""


def periodic_audit_in_serve_agrees() -> None:
    """`envlink serve --audit-interval` exports the same counts and writes the same reports."""
    crds = json.loads(kubectl("get", "customresourcedefinitions", "-o", "json"))["items"]
    if not any(c["metadata"]["name"] == "policyreports.wgpolicyk8s.io" for c in crds):
        kubectl("create", "-f", "-", stdin=json.dumps(POLICYREPORT_CRD))
        kubectl("wait", "--for=condition=Established", "--timeout=60s",
                "crd/policyreports.wgpolicyk8s.io")
    metrics_port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            [ENVLINK, "serve", "--dev", "--dev-ca-out", str(Path(d) / "ca.pem"), "--kubeconfig", KUBECONFIG,
             "--listen", f"127.0.0.1:{free_port()}", "--metrics-listen", f"127.0.0.1:{metrics_port}",
             "--audit-interval", "2s", "--audit-policy-reports"],
            stdout=subprocess.DEVNULL, stderr=open(Path(d) / "serve.log", "w"))
        try:
            want: dict[tuple[str, str], int] = {}
            for ns in OURS:
                for c in ("reserved", "stale-service-variable", "missing-service-variable"):
                    want[(c, ns)] = sum(1 for k in EXPECTED if k[0] == c and k[2] == ns)
            deadline = time.monotonic() + 60
            got: dict[tuple[str, str], int] = {}
            while time.monotonic() < deadline:
                got = {}
                for line in scrape(metrics_port).splitlines():
                    if line.startswith("envlink_audit_findings{"):
                        labels, value = line.rsplit(" ", 1)
                        fields = dict(kv.split("=", 1) for kv in labels[len("envlink_audit_findings{"):-1].split(","))
                        key = (fields["check"].strip('"'), fields["namespace"].strip('"'))
                        if key[1] in OURS:
                            got[key] = int(float(value))
                if got == want:
                    break
                time.sleep(0.5)
            check(got == want, f"envlink_audit_findings for our namespaces: {sorted(got.items())}, "
                  f"want {sorted(want.items())}; log: {(Path(d) / 'serve.log').read_text()[-800:]}")

            def written() -> set[tuple[str, str, str, str, str, str]] | None:
                out = set()
                for ns in OURS:
                    p = run([KUBECTL, "get", "policyreport", "envlink-audit", "-n", ns, "-o", "json"])
                    if p.returncode != 0:
                        return None
                    for res in json.loads(p.stdout).get("results") or []:
                        r = res["resources"][0]
                        out.add((res["policy"], r["kind"], r["namespace"], r["name"],
                                 res["properties"]["container"], res["properties"]["variable"]))
                return out
            reports = None
            while time.monotonic() < deadline:
                reports = written()
                if reports == EXPECTED:
                    break
                time.sleep(0.5)
            check(reports == EXPECTED, f"written PolicyReports: {diff(reports or set(), EXPECTED)}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


TESTS: list[Callable[[], None]] = [
    audit_json_reports_exactly_the_planted_findings,
    audit_policyreports_agree_with_json,
    audit_cluster_wide_with_small_pages,
    audit_clean_namespace_exits_0,
    audit_table_for_people,
    audit_errors_exit_2,
    mutate_directory_with_live_services,
    periodic_audit_in_serve_agrees,
]


def main() -> int:
    if not ENVLINK or not Path(ENVLINK).exists() or not KUBECONFIG:
        print("audit_e2e: set ENVLINK_BIN (the envlink binary) and KUBECONFIG", file=sys.stderr)
        print(f"0 passed, {len(TESTS)} failed")
        return 1
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else None
    passed = failed = 0
    t0 = time.monotonic()
    try:
        plant()
        print(f"PASS plant ({time.monotonic() - t0:.1f}s): namespaces {', '.join(OURS)}")
        passed += 1
    except Exception as e:  # noqa: BLE001 - every failure is reported, never raised
        print(f"FAIL plant: {e}")
        traceback.print_exc()
        print(f"{passed} passed, {failed + 1 + len(TESTS)} failed")
        return 1
    for test in TESTS:
        if only and only not in test.__name__:
            continue
        t = time.monotonic()
        try:
            test()
            print(f"PASS {test.__name__} ({time.monotonic() - t:.1f}s)")
            passed += 1
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {test.__name__}: {e}")
            if not isinstance(e, Fail):
                traceback.print_exc()
            failed += 1
    # Namespaces are left for inspection: without a controller-manager they could not be
    # deleted anyway (they would stay Terminating); their names carry a random id.
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
