#!/usr/bin/env python3
"""Chart tests for charts/envlink against a real kube-apiserver.

    KUBECONFIG=/path/to/kubeconfig python3 tests/helm/test_chart.py [-k NAME]

Needs: a running API server (tests/e2e/testbed.sh start), kubectl, openssl, Python 3.11 with
PyYAML and cryptography, and helm-sdkpy's library (helm.py installs it on first use).
Without KUBECONFIG only the offline tests (lint, values file vs schema) run, and the run
fails: the chart is not tested until it has been installed somewhere.

It installs releases, reads back what the API server stores (never running Pods: the test
bed has no scheduler or kubelet, and no traffic leaves loopback), upgrades, uninstalls, and
checks deploy/ (in sync with the chart, accepted by the server, gen-certs.sh works).
Closing line: "N passed, M failed".
"""

from __future__ import annotations

import base64
import json
import os
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


def ensure_ns(ns: str) -> None:
    if not exists("namespace", ns):
        kubectl("create", "namespace", ns)
    # Kubernetes 1.20 namespaces lack kubernetes.io/metadata.name, so the chart's exclusion
    # of its own namespace by name only works with the opt-out label (see the chart README).
    kubectl("label", "--overwrite", "namespace", ns, "envlink.io/ignore=true")


def server_has(group_version: str) -> bool:
    return group_version in kubectl("api-versions").stdout.split()


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
    with helm.Helm("default") as h:
        res = h.lint(CHART)
    c = helm.lint_summary(res)
    print("   ", "; ".join(helm.lint_lines(res)) or "no messages")
    assert c["error"] == 0 and c["warning"] == 0 and c["unknown"] == 0, f"lint: {c}"


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
    assert rules == [{"apiGroups": [""], "resources": ["services"],
                      "verbs": ["get", "list", "watch"]}], rules
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
    assert len(rules) == 2
    assert tls_state(NS, FULL) == before, "values upgrade changed the certificate"
    with helm.Helm(NS) as h:  # back to the defaults
        h.upgrade(REL, CHART, reset_values=True)
    assert len(get("clusterrole", FULL)["rules"]) == 1


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
    kubectl("apply", "-f", "-", stdin=_deploy_docs())
    p = subprocess.run(gen + ["patch"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    try:
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


OFFLINE = [test_lint_clean, test_default_values_match_schema, test_readme_lists_every_value,
           test_envlink_accepts_chart_config_and_args]
ONLINE = [
    test_install, test_webhook_configurations, test_ca_bundle_verifies_secret,
    test_rbac_least_privilege, test_pdb_and_api_version, test_deployment_security,
    test_service_and_configmap, test_upgrade_keeps_ca, test_upgrade_config_rolls_pods_and_rbac_switch,
    test_schema_refuses_bad_values, test_rotation_by_deleting_secret, test_uninstall_removes_everything,
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
