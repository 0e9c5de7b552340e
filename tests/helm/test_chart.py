#!/usr/bin/env python3
"""Chart tests for charts/envlink against a real kube-apiserver.

    KUBECONFIG=/path/to/kubeconfig python3 tests/helm/test_chart.py [-k NAME]

Needs: a running API server (tests/e2e/testbed.sh start), kubectl, openssl, Python 3.11 with
PyYAML and cryptography, and the helm CLI (`tests/e2e/testbed.sh build-helm`; helm.py finds it).
Without KUBECONFIG only the offline tests (lint, values file vs schema) run, and the run
fails: the chart is not tested until it has been installed somewhere.

It lints and renders the chart with `helm lint`/`helm template`, installs releases with
`helm install`, reads back what the API server stores (never running Pods: the test bed has
no scheduler or kubelet, and no traffic leaves loopback), upgrades, rolls back, runs
`helm test`, uninstalls, and checks deploy/ (in sync with the chart, accepted by the server,
gen-certs.sh works).

Version-dependent checks (the test API server is 1.20.2 or a current release) are decided
by what the server serves, never skipped silently:
  - policy/v1 PodDisruptionBudget where served, policy/v1beta1 on 1.20;
  - namespaces carry `kubernetes.io/metadata.name` from 1.21 on: there the chart's
    by-name exclusion of kube-system and the release namespace is tested as is, with no
    labels added; on 1.20 the release namespaces get the opt-out label (the chart README's
    advice for 1.20) and test_namespace_selector_excludes_by_name checks the opt-out label.
Closing line: "N passed, M failed".
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHART = str(ROOT / "charts" / "envlink")
sys.path.insert(0, str(HERE))
import helm  # noqa: E402

NS = "envlink-chart-test"      # namespace of the main release
REL = "test"                   # release name -> objects are named "test-envlink"
FULL = f"{REL}-envlink"
CM_NS = "envlink-chart-cm"     # cert-manager mode
CM_REL = "cm"
CM_FULL = f"{CM_REL}-envlink"

# ----------------------------------------------------------------------------------------
# helpers


def kubectl(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=stdin)
    if check and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr.strip()}")
    return p


def get(kind: str, name: str, ns: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"]
    if ns:
        args += ["-n", ns]
    return json.loads(kubectl(*args).stdout)


def exists(kind: str, name: str, ns: str | None = None) -> bool:
    args = ["get", kind, name]
    if ns:
        args += ["-n", ns]
    return kubectl(*args, check=False).returncode == 0


def names_label_served() -> bool:
    """Does the API server label every namespace with kubernetes.io/metadata.name (1.21+)?"""
    labels = get("namespace", "kube-system")["metadata"].get("labels") or {}
    return labels.get("kubernetes.io/metadata.name") == "kube-system"


def ensure_ns(ns: str) -> None:
    if not exists("namespace", ns):
        kubectl("create", "namespace", ns)
    # Kubernetes 1.20 namespaces lack kubernetes.io/metadata.name, so the chart's exclusion
    # of its own namespace by name only works with the opt-out label (see the chart README).
    # Current servers label every namespace by name: nothing is added there, so the chart is
    # tested exactly as an operator installs it.
    if not names_label_served():
        kubectl("label", "--overwrite", "namespace", ns, "envlink.io/ignore=true")


def server_has(group_version: str) -> bool:
    return group_version in kubectl("api-versions").stdout.split()


def dra_rules() -> list[dict]:
    """The ClusterRole rule the chart adds where the API server serves resource.k8s.io/v1."""
    if not server_has("resource.k8s.io/v1"):
        return []
    return [{"apiGroups": ["resource.k8s.io"],
             "resources": ["resourceclaims", "resourceclaimtemplates"],
             "verbs": ["get", "list", "watch"]}]


def pem(b64: str) -> bytes:
    return base64.b64decode(b64)


def tls_state(ns: str, full: str) -> dict[str, Any]:
    """The Secret's material and both caBundles."""
    sec = get("secret", f"{full}-tls", ns)["data"]
    mwc = get("mutatingwebhookconfiguration", full)
    vwc = get("validatingwebhookconfiguration", full)
    return {
        "ca": sec["ca.crt"], "crt": sec["tls.crt"], "key": sec["tls.key"],
        "mutating": mwc["webhooks"][0]["clientConfig"].get("caBundle"),
        "validating": vwc["webhooks"][0]["clientConfig"].get("caBundle"),
    }


def assert_bundle_verifies(state: dict[str, Any], ns: str, full: str) -> None:
    """caBundle == ca.crt, and that CA really signed tls.crt, for the Service's names."""
    assert state["mutating"] == state["ca"], "mutating caBundle is not the Secret's ca.crt"
    assert state["validating"] == state["ca"], "validating caBundle is not the Secret's ca.crt"
    ca = x509.load_pem_x509_certificate(pem(state["mutating"]))
    cert = x509.load_pem_x509_certificate(pem(state["crt"]))
    cert.verify_directly_issued_by(ca)  # signature, issuer name and algorithm
    assert ca.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    names = sans.get_values_for_type(x509.DNSName)
    assert f"{full}.{ns}.svc" in names, f"SANs {names} lack {full}.{ns}.svc"
    key = serialization.load_pem_private_key(pem(state["key"]), password=None)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    assert key.public_key().public_bytes(enc, pub) == cert.public_key().public_bytes(enc, pub), \
        "tls.key does not belong to tls.crt"
    # And the same check with openssl, as an independent verifier.
    with tempfile.TemporaryDirectory() as d:
        Path(d, "ca.pem").write_bytes(pem(state["mutating"]))
        Path(d, "crt.pem").write_bytes(pem(state["crt"]))
        p = subprocess.run(["openssl", "verify", "-CAfile", f"{d}/ca.pem", f"{d}/crt.pem"],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"openssl verify: {p.stdout}{p.stderr}"


def expect_refused(fn: Callable[[], Any], *needles: str) -> str:
    try:
        fn()
    except helm.HelmError as e:
        msg = str(e)
        for n in needles:
            assert n in msg, f"error does not mention {n!r}: {msg}"
        return msg
    raise AssertionError("Helm accepted values that must be refused")


def crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    """A minimal stand-in CRD (any content) so a chart's optional objects can be installed."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                           "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object",
                                         "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


def values_yaml() -> dict[str, Any]:
    return yaml.safe_load(Path(CHART, "values.yaml").read_text())


# ----------------------------------------------------------------------------------------
# offline tests


def test_lint_clean() -> None:
    """`helm lint`: exit 0, no ERROR or WARNING message (INFO messages are printed)."""
    p = helm.Helm("default").lint(CHART)
    msgs = helm.lint_messages(p.stdout)
    print("   ", "; ".join(f"[{sev}] {text}" for sev, text in msgs) or "no messages")
    assert p.returncode == 0, f"helm lint failed: {p.stdout}{p.stderr}"
    bad = [m for m in msgs if m[0] in ("ERROR", "WARNING")]
    assert not bad, f"helm lint: {bad}"
    assert "1 chart(s) linted, 0 chart(s) failed" in p.stdout, p.stdout
    # --strict turns warnings into failures: it must pass too.
    p = helm.Helm("default").lint(CHART, strict=True)
    assert p.returncode == 0, f"helm lint --strict failed: {p.stdout}{p.stderr}"


def test_lint_reports_bad_values() -> None:
    """`helm lint` with values the schema refuses fails and says which value, in words."""
    p = helm.Helm("default").lint(CHART, {"replicaCont": 3})
    assert p.returncode != 0, "helm lint accepted replicaCont"
    errors = [t for sev, t in helm.lint_messages(p.stdout) if sev == "ERROR"]
    assert any("replicaCont" in t for t in errors), f"lint errors do not name replicaCont: {p.stdout}"


def test_template_client_only() -> None:
    """`helm template` renders without a cluster: the kinds operators expect, PDB policy/v1
    (rendered for a current Kubernetes), and the schema is enforced."""
    h = helm.Helm(NS)
    docs = [d for d in yaml.safe_load_all(h.template(REL, CHART)) if d]
    kinds = sorted(d["kind"] for d in docs)
    want = sorted(["ServiceAccount", "Secret", "ConfigMap", "ClusterRole", "ClusterRoleBinding",
                   "Service", "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration",
                   "ValidatingWebhookConfiguration"])
    assert kinds == want, kinds
    assert all(d["metadata"].get("namespace") in (NS, None) for d in docs)
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1", pdb["apiVersion"]
    # (No client-only check of the 1.20 variant: Helm 4's built-in API version list for
    # `template` names policy/v1/PodDisruptionBudget whatever --kube-version says, so the
    # chart's APIVersions.Has branch picks policy/v1 there; the 1.20 run checks v1beta1 live.)
    expect_refused(lambda: h.template(REL, CHART, {"config": {"services": {"mdoe": "all"}}}), "mdoe")


def _rendered(values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """`helm template` (client-only) with values, the documents grouped by kind."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in yaml.safe_load_all(helm.Helm(NS).template(REL, CHART, values)):
        if d:
            out.setdefault(d["kind"], []).append(d)
    return out


def _container(docs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (dep,) = docs["Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def test_webhook_port_and_host_network() -> None:
    """webhook.port reaches the container port, --listen, the Service's targetPort (by the
    port's name) and both probes; hostNetwork brings ClusterFirstWithHostNet; defaults
    unchanged (8443, no hostNetwork, no dnsPolicy)."""
    for port, host in ((8443, False), (9443, True)):
        vals: dict[str, Any] = {"webhook": {"port": port}, "hostNetwork": host} if host else {}
        docs = _rendered(vals)
        c = _container(docs)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"webhook": port, "metrics": 9090}, ports
        assert f"--listen=0.0.0.0:{port}" in c["args"], c["args"]
        assert not [a for a in c["args"] if a.startswith("--listen=") and a != f"--listen=0.0.0.0:{port}"]
        (svc,) = docs["Service"]
        https = next(p for p in svc["spec"]["ports"] if p["name"] == "https")
        assert https["port"] == 443
        # The named targetPort resolves to the container port of that name.
        assert ports[https["targetPort"]] == port, https
        for probe in ("readinessProbe", "livenessProbe"):
            named = c[probe]["httpGet"]["port"]
            assert ports[named] == port, (probe, named)
        pod = docs["Deployment"][0]["spec"]["template"]["spec"]
        if host:
            assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet", pod
        else:
            assert "hostNetwork" not in pod and "dnsPolicy" not in pod, pod
    # The two listeners need two ports, and the schema keeps the webhook off privileged ports.
    expect_refused(lambda: helm.Helm(NS).template(REL, CHART, {"webhook": {"port": 9090}}),
                   "metrics.port")
    helm.Helm(NS).template(REL, CHART, {"webhook": {"port": 9090}, "metrics": {"enabled": False}})
    expect_refused(lambda: helm.Helm(NS).template(REL, CHART, {"webhook": {"port": 443}}), "port")
    expect_refused(lambda: helm.Helm(NS).template(REL, CHART, {"hostNetwork": "yes"}), "hostNetwork")


def test_metrics_disabled_stops_the_listener() -> None:
    """metrics.enabled=false: envlink gets --no-metrics (and no --metrics-listen), the
    container and the Service lose the metrics port, no ServiceMonitor."""
    c = _container(_rendered({}))
    assert "--metrics-listen=0.0.0.0:9090" in c["args"] and "--no-metrics" not in c["args"]
    docs = _rendered({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    c = _container(docs)
    assert "--no-metrics" in c["args"], c["args"]
    assert not [a for a in c["args"] if a.startswith("--metrics-listen")], c["args"]
    assert [p["name"] for p in c["ports"]] == ["webhook"], c["ports"]
    (svc,) = docs["Service"]
    assert [p["name"] for p in svc["spec"]["ports"]] == ["https"], svc["spec"]["ports"]
    assert "ServiceMonitor" not in docs
    exe = envlink_binary()
    if exe:
        helptext = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True).stdout
        assert "--no-metrics" in helptext, "envlink serve has no --no-metrics"


def test_network_policy() -> None:
    """networkPolicy: off by default; on, ingress to the webhook port from the given peers
    (from anywhere when none are given) and to the metrics port from the namespace selector."""
    assert "NetworkPolicy" not in _rendered({})
    (np,) = _rendered({"networkPolicy": {"enabled": True}})["NetworkPolicy"]
    spec = np["spec"]
    assert np["metadata"]["namespace"] == NS
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "envlink",
                                                  "app.kubernetes.io/instance": REL}
    webhook, metrics = spec["ingress"]
    assert webhook == {"ports": [{"protocol": "TCP", "port": 8443}]}, webhook  # no from: anyone
    assert metrics == {"ports": [{"protocol": "TCP", "port": 9090}],
                       "from": [{"namespaceSelector": {}}]}, metrics
    peers = [{"ipBlock": {"cidr": "10.0.0.0/24"}},
             {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
              "podSelector": {"matchLabels": {"app": "konnectivity-agent"}}}]
    mon = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    (np,) = _rendered({"webhook": {"port": 9443}, "metrics": {"port": 9191},
                       "networkPolicy": {"enabled": True, "webhookFrom": peers,
                                         "metricsFromNamespaceSelector": mon}})["NetworkPolicy"]
    webhook, metrics = np["spec"]["ingress"]
    assert webhook == {"ports": [{"protocol": "TCP", "port": 9443}], "from": peers}, webhook
    assert metrics == {"ports": [{"protocol": "TCP", "port": 9191}],
                       "from": [{"namespaceSelector": mon}]}, metrics
    # Without metrics, only the webhook port is opened.
    (np,) = _rendered({"metrics": {"enabled": False},
                       "networkPolicy": {"enabled": True}})["NetworkPolicy"]
    assert np["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8443}]}]
    expect_refused(lambda: helm.Helm(NS).template(
        REL, CHART, {"networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlok": {}}]}}), "ipBlok")


def test_audit_flags_and_rbac() -> None:
    """audit.interval/policyReports pass --audit-interval/--audit-policy-reports, and the
    ClusterRole grants the audit's lists (and PolicyReport writes) only when they are on."""
    audit_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets",
                                              "replicasets"], "verbs": ["list"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
    ]
    reports = {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"],
               "verbs": ["get", "create", "patch"]}

    def rules(docs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        (role,) = docs["ClusterRole"]
        return role["rules"]

    docs = _rendered({})
    assert not [a for a in _container(docs)["args"] if a.startswith("--audit")]
    for r in audit_rules + [reports]:
        assert r not in rules(docs), r
    assert not [r for r in rules(docs) if "list" in r["verbs"] and r["resources"] != ["services"]
                and r["apiGroups"] != ["resource.k8s.io"]], rules(docs)
    docs = _rendered({"audit": {"interval": "10m"}})
    args = _container(docs)["args"]
    assert "--audit-interval=10m" in args and "--audit-policy-reports" not in args, args
    assert all(r in rules(docs) for r in audit_rules), rules(docs)
    assert reports not in rules(docs)
    docs = _rendered({"audit": {"interval": "30s", "policyReports": True}})
    args = _container(docs)["args"]
    assert "--audit-interval=30s" in args and "--audit-policy-reports" in args, args
    assert all(r in rules(docs) for r in audit_rules + [reports]), rules(docs)
    # No writes anywhere else; the rest stays read-only.
    assert [r for r in rules(docs) if set(r["verbs"]) - {"get", "list", "watch"}] == [reports]
    expect_refused(lambda: helm.Helm(NS).template(REL, CHART, {"audit": {"policyReports": True}}),
                   "audit.interval")
    for bad in ("5h", "0", "soon"):
        expect_refused(lambda: helm.Helm(NS).template(REL, CHART, {"audit": {"interval": bad}}),
                       "interval")


def test_default_values_match_schema() -> None:
    schema = json.loads(Path(CHART, "values.schema.json").read_text())
    try:
        import jsonschema  # optional here; Helm itself enforces the schema in the online tests
    except ImportError:
        print("    (jsonschema not installed: default values not validated offline)")
    else:
        jsonschema.validate(values_yaml(), schema)

    def closed(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} is not closed"
            for k, v in node.items():
                closed(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                closed(v, f"{path}[{i}]")

    closed(schema, "#")


def test_readme_lists_every_value() -> None:
    readme = Path(CHART, "README.md").read_text()

    def leaves(d: dict[str, Any], prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            key = f"{prefix}{k}"
            # Kubernetes objects are documented as a whole; config key by key.
            atomic = ("resources", "podSecurityContext", "containerSecurityContext")
            if isinstance(v, dict) and v and k not in atomic:
                out += leaves(v, key + ".")
            else:
                out.append(key)
        return out

    missing = [k for k in leaves(values_yaml()) if f"`{k}`" not in readme]
    assert not missing, f"charts/envlink/README.md does not document: {missing}"


class Skip(Exception):
    """A test that cannot run here (reported as skipped, never as passed)."""


def envlink_binary() -> str | None:
    for cand in (os.environ.get("ENVLINK_BIN"), ROOT / "target" / "release" / "envlink",
                 ROOT / "target" / "debug" / "envlink"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def test_envlink_accepts_chart_config_and_args() -> None:
    """The chart and the binary agree: every flag the Deployment passes exists in
    `envlink serve`, and envlink loads the policy the chart renders (default, and with a
    custom rule). Uses deploy/envlink.yaml, the chart's default rendering."""
    exe = envlink_binary()
    if not exe:
        raise Skip("no envlink binary (set ENVLINK_BIN or cargo build)")
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "envlink.yaml").read_text()) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "serve"
    helptext = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True).stdout
    for a in args[1:]:
        flag = a.split("=", 1)[0]
        assert f"{flag} " in helptext or f"{flag}=" in helptext or f"{flag}\n" in helptext, \
            f"envlink serve has no {flag}"
    cfg = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["config.yaml"])
    custom = json.loads(json.dumps(cfg))
    custom["reserved"]["rules"] = [{"name": "example-devices", "resources": ["example.com/*"],
                                    "names": ["EXAMPLE_VISIBLE_DEVICES"], "prefixes": ["EXAMPLE_"],
                                    "patterns": ["EX[0-9]+"], "scope": "requesting",
                                    "action": "deny"}]
    pod = ROOT / "tests" / "fixtures" / "mutate" / "pod.yaml"
    if not pod.is_file():
        raise Skip(f"{pod} is missing")
    with tempfile.TemporaryDirectory() as d:
        for name, c in (("default", cfg), ("custom", custom)):
            f = Path(d, f"{name}.yaml")
            f.write_text(yaml.safe_dump(c))
            p = subprocess.run([exe, "mutate", "--pod", str(pod), "--config", str(f), "-o", "patch"],
                               capture_output=True, text=True)
            assert p.returncode in (0, 1), f"envlink refused the chart's {name} config: {p.stderr}"


# ----------------------------------------------------------------------------------------
# online tests (need KUBECONFIG)


def test_install() -> None:
    ensure_ns(NS)
    with helm.Helm(NS) as h:
        res = h.install(REL, CHART)
    assert res["info"]["status"] == "deployed", res["info"]


def test_webhook_configurations() -> None:
    mwc = get("mutatingwebhookconfiguration", FULL)["webhooks"]
    vwc = get("validatingwebhookconfiguration", FULL)["webhooks"]
    assert len(mwc) == 1 and len(vwc) == 1
    m, v = mwc[0], vwc[0]
    for w in (m, v):
        assert w["sideEffects"] == "None"
        assert w["admissionReviewVersions"] == ["v1"]
        assert w["failurePolicy"] == "Fail"
        assert w["timeoutSeconds"] == 10
        assert w["matchPolicy"] == "Equivalent"
        svc = w["clientConfig"]["service"]
        assert svc["name"] == FULL and svc["namespace"] == NS and svc["port"] == 443
        exprs = {e["key"]: e for e in w["namespaceSelector"]["matchExpressions"]}
        assert exprs["envlink.io/ignore"]["operator"] == "NotIn"
        assert exprs["envlink.io/ignore"]["values"] == ["true"]
        names = exprs["kubernetes.io/metadata.name"]
        assert names["operator"] == "NotIn" and set(names["values"]) == {"kube-system", NS}
    assert m["clientConfig"]["service"]["path"] == "/mutate"
    assert v["clientConfig"]["service"]["path"] == "/validate"
    assert m["reinvocationPolicy"] == "IfNeeded"
    assert [(r["apiGroups"], r["resources"], r["operations"]) for r in m["rules"]] == [
        ([""], ["pods"], ["CREATE"])]
    got = sorted((g, res, tuple(sorted(r["operations"])))
                 for r in v["rules"] for g in r["apiGroups"] for res in r["resources"])
    want = sorted([("", "pods", ("CREATE",)), ("", "pods/ephemeralcontainers", ("UPDATE",))]
                  + [("apps", k, ("CREATE", "UPDATE"))
                     for k in ("deployments", "statefulsets", "daemonsets", "replicasets")]
                  + [("batch", k, ("CREATE", "UPDATE")) for k in ("jobs", "cronjobs")])
    assert got == want, got


def test_ca_bundle_verifies_secret() -> None:
    sec = get("secret", f"{FULL}-tls", NS)
    assert sec["type"] == "kubernetes.io/tls"
    assert_bundle_verifies(tls_state(NS, FULL), NS, FULL)


def test_rbac_least_privilege() -> None:
    rules = get("clusterrole", FULL)["rules"]
    want = [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]
    # Where DRA is served (resource.k8s.io/v1), envlink also watches claims for device classes.
    want += dra_rules()
    assert rules == want, rules
    crb = get("clusterrolebinding", FULL)
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": FULL}
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": FULL, "namespace": NS}]
    # No namespaced Role/RoleBinding, nothing else granted.
    assert not json.loads(kubectl("get", "roles,rolebindings", "-n", NS, "-o", "json",
                                  "-l", f"app.kubernetes.io/instance={REL}").stdout)["items"]
    # What the ServiceAccount may actually do, as the API server's authorizer sees it.
    sa = f"system:serviceaccount:{NS}:{FULL}"
    for verb, res, allowed in [("watch", "services", "yes"), ("list", "services", "yes"),
                               ("create", "services", "no"), ("list", "configmaps", "no"),
                               ("get", "secrets", "no"), ("list", "pods", "no")]:
        p = kubectl("auth", "can-i", verb, res, "--all-namespaces", "--as", sa, check=False)
        assert p.stdout.strip() == allowed, f"can-i {verb} {res}: {p.stdout.strip()}"


def test_pdb_and_api_version() -> None:
    v1 = server_has("policy/v1")
    manifest = helm.release_record(REL, NS, None)["manifest"]
    docs = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "PodDisruptionBudget"]
    assert len(docs) == 1
    assert docs[0]["apiVersion"] == ("policy/v1" if v1 else "policy/v1beta1"), docs[0]["apiVersion"]
    pdb = get("pdb", FULL, NS)
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = get("deployment", FULL, NS)["spec"]["template"]["metadata"]["labels"]
    sel = pdb["spec"]["selector"]["matchLabels"]
    assert sel and all(pod_labels.get(k) == v for k, v in sel.items())


def test_deployment_security() -> None:
    d = get("deployment", FULL, NS)
    spec = d["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532 and psc["runAsGroup"] == 65532
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert "privileged" not in sc or sc["privileged"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": 8443, "metrics": 9090}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        g = c[probe]["httpGet"]
        assert (g["scheme"], g["path"], g["port"]) == ("HTTPS", path, "webhook"), g
    args = c["args"]
    for a in ("serve", "--listen=0.0.0.0:8443", "--tls-cert=/etc/envlink/tls/tls.crt",
              "--tls-key=/etc/envlink/tls/tls.key", "--config=/etc/envlink/config/config.yaml",
              "--metrics-listen=0.0.0.0:9090", "--request-timeout=8s"):
        assert a in args, f"{a} missing from {args}"
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    # Mounted as directories (no subPath), so the kubelet's symlink swap reaches envlink.
    assert mounts["tls"]["mountPath"] == "/etc/envlink/tls" and "subPath" not in mounts["tls"]
    assert mounts["config"]["mountPath"] == "/etc/envlink/config" and "subPath" not in mounts["config"]
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == f"{FULL}-tls"
    assert vols["config"]["configMap"]["name"] == FULL
    assert pod["serviceAccountName"] == FULL
    assert pod["enableServiceLinks"] is False
    aff = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert aff[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAntiAffinity"]
    assert spec["template"]["metadata"]["annotations"]["checksum/config"]


def test_service_and_configmap() -> None:
    svc = get("service", FULL, NS)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"https": (443, "webhook"), "metrics": (9090, "metrics")}
    assert svc["spec"]["type"] == "ClusterIP"
    cm = get("configmap", FULL, NS)
    # The chart writes its RBAC switch reserved.checkConfigMaps into the policy as well.
    values = values_yaml()
    want = json.loads(json.dumps(values["config"]))
    want.setdefault("reserved", {})["checkConfigMaps"] = values["reserved"]["checkConfigMaps"]
    got = yaml.safe_load(cm["data"]["config.yaml"])
    assert got == want, f"ConfigMap config.yaml {got} != values' config {want}"
    assert exists("serviceaccount", FULL, NS)


def admitted_in(ns: str) -> tuple[bool, str]:
    """Is a Pod in `ns` admitted (server-side dry run, so nothing is stored)? The chart's
    webhooks point at its Service, which has no endpoints here (no kubelet runs envlink) and
    fail closed: a Pod the webhooks select is refused with "failed calling webhook", a Pod
    in an excluded namespace never reaches them."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "selector-probe", "namespace": ns},
           "spec": {"containers": [{"name": "c", "image": "registry.invalid/probe:1"}]}}
    p = kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False)
    return p.returncode == 0, p.stderr.strip()


def test_namespace_selector_excludes_by_name() -> None:
    """Through the API server: the installed webhooks (failurePolicy Fail, no endpoints) refuse
    Pods in an ordinary namespace and leave the release namespace and kube-system alone. On a
    current server this works by the kubernetes.io/metadata.name label alone (nothing was
    labelled by hand); on 1.20 only by the opt-out label (listed explicitly, not skipped)."""
    other = "envlink-chart-selected"
    if not exists("namespace", other):
        kubectl("create", "namespace", other)   # no labels: selected by the webhooks
    ok, err = admitted_in(other)
    assert not ok and "failed calling webhook" in err, f"Pod in {other}: admitted={ok} {err}"
    assert "mutate.envlink.io" in err or "validate.envlink.io" in err, err
    ok, err = admitted_in(NS)
    assert ok, f"Pod in the release namespace {NS} reached the webhooks: {err}"
    ns_labels = get("namespace", NS)["metadata"].get("labels") or {}
    if names_label_served():
        assert "envlink.io/ignore" not in ns_labels, "the release namespace was labelled by hand"
        ok, err = admitted_in("kube-system")
        assert ok, f"Pod in kube-system reached the webhooks: {err}"
    else:
        # 1.20: no kubernetes.io/metadata.name; the release namespace is out by the opt-out
        # label only, and kube-system (unlabelled) is NOT excluded - the chart README's 1.20
        # limitation, asserted so that it is visible.
        assert ns_labels.get("envlink.io/ignore") == "true"
        ok, err = admitted_in("kube-system")
        assert not ok and "failed calling webhook" in err, \
            f"1.20: kube-system without the opt-out label should be selected: {err}"
        print("    (1.20: by-name exclusion cannot work, no kubernetes.io/metadata.name label; "
              "checked the opt-out label instead)")


def test_upgrade_keeps_ca() -> None:
    before = tls_state(NS, FULL)
    with helm.Helm(NS) as h:
        h.upgrade(REL, CHART)
    after = tls_state(NS, FULL)
    assert after == before, "plain upgrade changed the certificate or a caBundle"


def test_upgrade_config_rolls_pods_and_rbac_switch() -> None:
    before = tls_state(NS, FULL)
    sum_before = get("deployment", FULL, NS)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    extra = {"key": "team", "operator": "NotIn", "values": ["infra"]}
    objsel = {"matchExpressions": [{"key": "example.com/skip", "operator": "DoesNotExist"}]}
    vals = {"reserved": {"checkConfigMaps": True},
            "config": {"services": {"onMissing": "warn"}},
            "webhook": {"extraNamespaceSelectorExpressions": [extra], "objectSelector": objsel}}
    with helm.Helm(NS) as h:
        h.upgrade(REL, CHART, vals)
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        w = get(kind, FULL)["webhooks"][0]
        exprs = w["namespaceSelector"]["matchExpressions"]
        assert len(exprs) == 3 and exprs[2] == extra, exprs
        assert w["objectSelector"] == objsel, w["objectSelector"]
    sum_after = get("deployment", FULL, NS)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert sum_after != sum_before, "config change did not change the Pod template"
    cfg = yaml.safe_load(get("configmap", FULL, NS)["data"]["config.yaml"])
    assert cfg["services"]["onMissing"] == "warn" and cfg["services"]["mode"] == "all"
    rules = get("clusterrole", FULL)["rules"]
    assert {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]} in rules
    assert len(rules) == 2 + len(dra_rules()), rules
    assert tls_state(NS, FULL) == before, "values upgrade changed the certificate"
    with helm.Helm(NS) as h:  # back to the defaults
        h.upgrade(REL, CHART, reset_values=True)
    assert len(get("clusterrole", FULL)["rules"]) == 1 + len(dra_rules())


def test_rollback_restores_previous_revision() -> None:
    """`helm rollback` to the previous revision brings its config back (a new revision),
    and keeps the certificate."""
    with helm.Helm(NS) as h:
        base = int(h.status(REL)["version"])
        cm_before = get("configmap", FULL, NS)["data"]["config.yaml"]
        tls_before = tls_state(NS, FULL)
        h.upgrade(REL, CHART, {"config": {"services": {"onMissing": "warn"}}})
        assert yaml.safe_load(get("configmap", FULL, NS)["data"]["config.yaml"])["services"]["onMissing"] == "warn"
        assert int(h.status(REL)["version"]) == base + 1
        out = h.rollback(REL, base)
        assert "Rollback was a success" in out, out
        st = h.status(REL)
        assert int(st["version"]) == base + 2 and st["info"]["status"] == "deployed", st["info"]
        hist = h.history(REL)
        assert hist[-1]["description"] == f"Rollback to {base}", hist[-1]
        assert [r["status"] for r in hist if int(r["revision"]) >= base] == ["superseded", "superseded", "deployed"], hist
    assert get("configmap", FULL, NS)["data"]["config.yaml"] == cm_before, "rollback did not restore the config"
    assert tls_state(NS, FULL) == tls_before, "rollback changed the certificate"


def test_helm_test_without_test_hooks() -> None:
    """`helm test`: the chart ships no test hook (a hook Pod needs an image with an HTTP
    client; envlink's image has none, and here no kubelet would run it anyway), so
    `helm test` succeeds and says there is no test suite - rather than pretending."""
    with helm.Helm(NS) as h:
        p = h.test(REL)
    assert p.returncode == 0, f"helm test failed: {p.stdout}{p.stderr}"
    assert re.search(r"TEST SUITE:\s+None", p.stdout), p.stdout
    assert "Phase:" not in p.stdout, p.stdout


def test_schema_refuses_bad_values() -> None:
    ensure_ns(NS)
    cases = [
        ({"replicaCont": 3}, ["replicaCont"]),
        ({"webhook": {"mutating": {"failurePolicy": "fail"}}}, ["failurePolicy"]),
        ({"webhook": {"validating": {"timeoutSeconds": 31}}}, ["timeoutSeconds"]),
        ({"webhook": {"namespaceSelectr": {}}}, ["namespaceSelectr"]),
        ({"replicaCount": "2"}, ["replicaCount"]),
        ({"config": {"services": {"mdoe": "all"}}}, ["mdoe"]),
        ({"config": {"reserved": {"rules": [{"name": "x", "names": ["A"], "action": "block"}]}}},
         ["action"]),
        ({"certManager": {"enable": True}}, ["enable"]),
    ]
    with helm.Helm(NS) as h:
        for vals, needles in cases:
            expect_refused(lambda: h.install("bad", CHART, vals), *needles)
        # A cross-value rule the chart checks itself.
        expect_refused(lambda: h.install("bad", CHART, {"requestTimeout": "10s"}),
                       "requestTimeout")
        # On upgrade too, and the release stays where it was.
        rev = h.status(REL)["version"]
        expect_refused(lambda: h.upgrade(REL, CHART, {"replicaCont": 3}), "replicaCont")
        assert h.status(REL)["version"] == rev
        assert not [r for r in h.list() if r["name"] == "bad"], "a refused install left a release"


def test_rotation_by_deleting_secret() -> None:
    before = tls_state(NS, FULL)
    kubectl("delete", "secret", f"{FULL}-tls", "-n", NS)
    with helm.Helm(NS) as h:
        h.upgrade(REL, CHART)
    after = tls_state(NS, FULL)
    assert after["ca"] != before["ca"], "deleting the Secret did not rotate the CA"
    assert_bundle_verifies(after, NS, FULL)


def test_uninstall_removes_everything() -> None:
    with helm.Helm(NS) as h:
        h.uninstall(REL)
    for kind, name, ns in [("mutatingwebhookconfiguration", FULL, None),
                           ("validatingwebhookconfiguration", FULL, None),
                           ("clusterrole", FULL, None), ("clusterrolebinding", FULL, None),
                           ("deployment", FULL, NS), ("secret", f"{FULL}-tls", NS)]:
        assert not exists(kind, name, ns), f"{kind} {name} survived uninstall"


def test_cert_manager_mode() -> None:
    # Stand-in CRDs: no cert-manager runs here, but the objects can be created and read back.
    for group, kind, plural in [("cert-manager.io", "Issuer", "issuers"),
                                ("cert-manager.io", "Certificate", "certificates"),
                                ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors")]:
        kubectl("apply", "-f", "-", stdin=json.dumps(crd(group, kind, plural)))
        kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{plural}.{group}")
    ensure_ns(CM_NS)
    vals = {"certManager": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}}
    with helm.Helm(CM_NS) as h:
        for attempt in range(10):  # discovery may lag a moment behind the new CRDs
            try:
                h.install(CM_REL, CHART, vals)
                break
            except helm.HelmError as e:
                if "no matches for kind" not in str(e) or attempt == 9:
                    raise
                time.sleep(1)
    try:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            w = get(kind, CM_FULL)
            assert w["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{CM_NS}/{CM_FULL}"
            assert "caBundle" not in w["webhooks"][0]["clientConfig"]
        assert not exists("secret", f"{CM_FULL}-tls", CM_NS), "chart made a Secret in cert-manager mode"
        cert = get("certificates.cert-manager.io", CM_FULL, CM_NS)["spec"]
        assert cert["secretName"] == f"{CM_FULL}-tls"
        assert f"{CM_FULL}.{CM_NS}.svc" in cert["dnsNames"]
        assert cert["issuerRef"] == {"kind": "Issuer", "name": f"{CM_FULL}-ca"}
        ca = get("certificates.cert-manager.io", f"{CM_FULL}-ca", CM_NS)["spec"]
        assert ca["isCA"] is True and ca["issuerRef"]["name"] == f"{CM_FULL}-selfsigned"
        assert "selfSigned" in get("issuers.cert-manager.io", f"{CM_FULL}-selfsigned", CM_NS)["spec"]
        assert get("issuers.cert-manager.io", f"{CM_FULL}-ca", CM_NS)["spec"]["ca"]["secretName"] == f"{CM_FULL}-ca"
        sm = get("servicemonitors.monitoring.coreos.com", CM_FULL, CM_NS)["spec"]
        assert sm["endpoints"][0]["port"] == "metrics"
        vol = {v["name"]: v for v in get("deployment", CM_FULL, CM_NS)["spec"]["template"]["spec"]["volumes"]}
        assert vol["tls"]["secret"]["secretName"] == f"{CM_FULL}-tls"
    finally:
        with helm.Helm(CM_NS) as h:
            h.uninstall(CM_REL)


def test_deploy_manifests_in_sync() -> None:
    p = subprocess.run([sys.executable, str(HERE / "render_deploy.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, f"{p.stdout[-3000:]}{p.stderr}"
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "envlink.yaml").read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert "Secret" not in kinds, "deploy/ must not ship a certificate"
    for d in docs:
        if d["kind"].endswith("WebhookConfiguration"):
            assert "caBundle" not in d["webhooks"][0]["clientConfig"], "deploy/ must not ship a caBundle"
        if d["kind"] == "PodDisruptionBudget":
            assert d["apiVersion"] == "policy/v1", d["apiVersion"]
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                             "ValidatingWebhookConfiguration"):
            assert d["metadata"]["namespace"] == "envlink", d["metadata"]


def _deploy_docs() -> str:
    """deploy/*.yaml as one stream; on a server without policy/v1 (Kubernetes 1.20) the
    PodDisruptionBudget is sent as policy/v1beta1 — the only change, same spec."""
    files = sorted((ROOT / "deploy").glob("*.yaml"))
    text = "\n---\n".join(f.read_text() for f in files)
    if not server_has("policy/v1"):
        assert text.count("apiVersion: policy/v1\n") == 1
        text = text.replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n")
    return text


def test_deploy_dry_run_server() -> None:
    if server_has("policy/v1"):
        kubectl("apply", "-f", str(ROOT / "deploy" / "00-namespace.yaml"))
        p = kubectl("apply", "--dry-run=server", "-f", str(ROOT / "deploy"), check=False)
    else:
        # The namespace must exist for a server-side dry run of what goes into it.
        kubectl("apply", "-f", str(ROOT / "deploy" / "00-namespace.yaml"))
        p = kubectl("apply", "--dry-run=server", "-f", "-", stdin=_deploy_docs(), check=False)
    assert p.returncode == 0, p.stderr
    print("   ", " | ".join(l for l in p.stdout.splitlines()))


def test_deploy_apply_and_gen_certs() -> None:
    kubectl("apply", "-f", str(ROOT / "deploy" / "00-namespace.yaml"))
    gen = [str(ROOT / "deploy" / "gen-certs.sh")]
    p = subprocess.run(gen + ["secret"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    if server_has("policy/v1"):
        # Exactly the README's commands: the directory, as operators apply it.
        kubectl("apply", "-f", str(ROOT / "deploy"))
    else:
        kubectl("apply", "-f", "-", stdin=_deploy_docs())   # 1.20: PDB as policy/v1beta1
    p = subprocess.run(gen + ["patch"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    try:
        # Every object of deploy/ is served back, in the API version it was written in.
        for d in yaml.safe_load_all(_deploy_docs()):
            if not d:
                continue
            md = d["metadata"]
            got = get(f"{d['kind'].lower()}.{d['apiVersion'].split('/')[0]}" if "/" in d["apiVersion"]
                      else d["kind"].lower(), md["name"], md.get("namespace"))
            assert got["metadata"]["name"] == md["name"], (d["kind"], md)
        assert_bundle_verifies(tls_state("envlink", "envlink"), "envlink", "envlink")
        # Re-applying the manifests (an upgrade) keeps the patched caBundle and the Secret.
        before = tls_state("envlink", "envlink")
        kubectl("apply", "-f", "-", stdin=_deploy_docs())
        p = subprocess.run(gen + ["secret"], capture_output=True, text=True)
        assert p.returncode == 0 and "kept" in p.stdout, p.stdout + p.stderr
        assert tls_state("envlink", "envlink") == before
    finally:
        # Everything but the Namespace: without a namespace controller a deleted namespace
        # stays Terminating for good, and render_deploy.py (run after these tests by
        # tests/e2e/run.sh) installs into it.
        docs = [d for d in yaml.safe_load_all(_deploy_docs()) if d and d.get("kind") != "Namespace"]
        kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-",
                stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}), check=False)
        kubectl("delete", "secret", "envlink-tls", "-n", "envlink", "--ignore-not-found", check=False)


OFFLINE = [test_lint_clean, test_lint_reports_bad_values, test_template_client_only,
           test_webhook_port_and_host_network, test_metrics_disabled_stops_the_listener,
           test_network_policy, test_audit_flags_and_rbac, test_default_values_match_schema, test_readme_lists_every_value,
           test_envlink_accepts_chart_config_and_args]
ONLINE = [
    test_install, test_webhook_configurations, test_ca_bundle_verifies_secret,
    test_rbac_least_privilege, test_pdb_and_api_version, test_deployment_security,
    test_service_and_configmap, test_namespace_selector_excludes_by_name, test_upgrade_keeps_ca,
    test_upgrade_config_rolls_pods_and_rbac_switch, test_rollback_restores_previous_revision,
    test_schema_refuses_bad_values, test_rotation_by_deleting_secret, test_helm_test_without_test_hooks,
    test_uninstall_removes_everything,
    test_cert_manager_mode, test_deploy_manifests_in_sync, test_deploy_dry_run_server,
    test_deploy_apply_and_gen_certs,
]


def main() -> int:
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else None
    tests = list(OFFLINE)
    online = bool(os.environ.get("KUBECONFIG"))
    if online:
        tests += ONLINE
    passed = failed = skipped = 0
    for t in tests:
        if only and only not in t.__name__:
            continue
        start = time.monotonic()
        try:
            t()
        except Skip as e:
            # In CI nothing may be skipped: a missing binary or fixture there is a failure.
            if os.environ.get("CI"):
                failed += 1
                print(f"FAIL {t.__name__}: cannot run in CI: {e}")
            else:
                skipped += 1
                print(f"skip {t.__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {t.__name__} ({time.monotonic() - start:.1f}s): {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {t.__name__} ({time.monotonic() - start:.1f}s)")
    if not online:
        print("KUBECONFIG is not set: the chart was not installed anywhere (see tests/helm/README.md)")
        failed += 1
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
