#!/usr/bin/env python3
"""End-to-end tests of envlink against a real kube-apiserver (tests/e2e/testbed.sh).

    KUBECONFIG=STATE/kubeconfig ENVLINK_STATE=STATE ENVLINK_BIN=target/debug/envlink \
        python3 tests/e2e/e2e.py [-k NAME]

Run it through `bash tests/e2e/run.sh`, which builds everything and runs this inside a
network namespace that has only loopback. Everything here talks to 127.0.0.1: envlink is
started on loopback ports with a certificate made for the run, and the API server calls it
through webhook configurations that name it by `clientConfig.url` (never a Service, whose
10.96.x.x cluster IP must never be dialled).

Every check goes THROUGH THE API SERVER: objects are created with kubectl, so the API
server calls envlink's webhooks, applies the patch and stores the result; the tests read
back what it stored. The expected service variables are computed here, from the Services
as the API server stores them (it assigns the cluster IPs), by an independent restatement
of the kubelet's rules (pkg/kubelet/kubelet_pods.go getServiceEnvVarMap and
pkg/kubelet/envvars FromServices) — never from envlink's output.

The same suite runs against kube-apiserver 1.20.2 and a current release (run.sh: one run
each), and against the current one with single-stack IPv6 Services (ENVLINK_E2E_IP_FAMILY=
ipv6: cluster IPs from fd00:10:96::/108, bracketed only inside the `tcp://[...]:port`
URLs). A scenario that only makes sense on one version says so in its @test(...) marker
(`only=` and `reason=`); on the other it is reported as `N/A name: reason`, counted in
neither column — the list is printed, never silently dropped:
  - ephemeral_containers_kind_1_20_refused: 1.20 only (the review of pods/ephemeralcontainers
    carries kind EphemeralContainers before 1.22; the testbed turns the alpha gate on);
  - ephemeral_container_reserved_name_refused, sidecar_containers_injected_and_checked,
    relaxed_env_names_and_file_key_refs, dra_resource_claims_admitted_and_injected:
    current only (the API fields do not exist in 1.20);
  - ipv6_service_variables: the IPv6 run only (the IPv4 runs have no IPv6 Services).

Output: one `PASS name (time)` / `FAIL name: reason` line per test, then the closing line
`N passed, M failed`. Exit status 1 when anything failed.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TESTBED = HERE / "testbed.sh"

LABEL = "envlink-e2e"          # namespaces opt in with envlink-e2e=<instance>; nothing else is touched
KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else "kubectl")

# ----------------------------------------------------------------------------------------
# small helpers


class Fail(AssertionError):
    pass


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    """Polls fn until it returns something truthy; fails with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except Fail as e:
            last = f"<{e}>"
        if time.monotonic() >= deadline:
            raise Fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {str(last)[:400]})")
        time.sleep(interval)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Plain-HTTP client for envlink's metrics port. No proxies: everything is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0, ""


# ----------------------------------------------------------------------------------------
# kubectl


SKEW = re.compile(r"version difference|WARNING: version|version skew", re.I)


def kubectl(*args: str, stdin: str | None = None, check_rc: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([KUBECTL, *args], capture_output=True, text=True, input=stdin, timeout=timeout)
    if check_rc and p.returncode != 0:
        raise Fail(f"kubectl {' '.join(args)} failed (exit {p.returncode}): {p.stderr.strip()[:800]}")
    return p


def warnings_of(stderr: str) -> list[str]:
    """kubectl's `Warning: ...` lines (admission warnings), without the version-skew one."""
    return [l[len("Warning: "):] for l in stderr.splitlines()
            if l.startswith("Warning: ") and not SKEW.search(l)]


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def apply_objs(objs: list[dict[str, Any]], *extra: str) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", *extra, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))


def create(obj: dict[str, Any], *extra: str, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl("create", *extra, "-f", "-", stdin=json.dumps(obj), check_rc=check_rc)


def namespace(name: str, instance: str | None = "main") -> str:
    labels = {LABEL: instance} if instance else {}
    apply_objs([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}])
    return name


def services_of_cluster() -> list[dict[str, Any]]:
    """Every Service as the API server stores it."""
    return get_json("services", "--all-namespaces")["items"]


def service(name: str, ns: str, ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "ClusterIP", **spec}
    if ports is not None:
        s["ports"] = ports
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": s}


def container(name: str, env: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "registry.invalid/e2e:1", "command": ["sleep", "3600"], **extra}
    if env is not None:
        c["env"] = env
    return c


def pod(name: str, ns: str, containers: list[dict[str, Any]] | None = None, annotations: dict[str, str] | None = None,
        init: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
        "spec": {"containers": containers or [container("app")], **spec},
    }
    if init:
        p["spec"]["initContainers"] = init
    return p


def create_pod(p: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Creates the Pod through the API server; returns (the stored Pod, kubectl warnings)."""
    r = create(p, "-o", "json")
    stored = get_json("pod", p["metadata"]["name"], "-n", p["metadata"]["namespace"])
    return stored, warnings_of(r.stderr)


def refused(p: dict[str, Any]) -> str:
    """Creates an object that must be refused; returns kubectl's error message."""
    r = create(p, check_rc=False)
    check(r.returncode != 0, f"{p['kind']} {p['metadata']['name']} was admitted, expected a refusal")
    return r.stderr


def envs(stored: dict[str, Any], kind: str = "containers") -> dict[str, list[tuple[str, Any]]]:
    return {c["name"]: [(e["name"], e.get("value", e.get("valueFrom"))) for e in c.get("env", [])]
            for c in stored["spec"].get(kind, [])}


def annotations(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("annotations") or {}


# ----------------------------------------------------------------------------------------
# The kubelet's rules, restated independently (DESIGN.md §1)

MASTER_NS, MASTER = "default", "kubernetes"


def ip_set(svc: dict[str, Any]) -> bool:
    ip = svc["spec"].get("clusterIP", "")
    return ip not in ("", "None")


def env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def from_service(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """envvars.FromServices for one Service, in the kubelet's order."""
    ip = svc["spec"]["clusterIP"]
    ports = svc["spec"]["ports"]
    prefix = env_name(svc["metadata"]["name"])
    out = [(prefix + "_SERVICE_HOST", ip), (prefix + "_SERVICE_PORT", str(ports[0]["port"]))]
    for sp in ports:
        if sp.get("name"):
            out.append((prefix + "_SERVICE_PORT_" + env_name(sp["name"]), str(sp["port"])))
    for i, sp in enumerate(ports):
        proto = sp.get("protocol") or "TCP"
        url = f"{proto.lower()}://{join_host_port(ip, sp['port'])}"
        if i == 0:
            out.append((prefix + "_PORT", url))
        pp = f"{prefix}_PORT_{sp['port']}_{proto.upper()}"
        out += [(pp, url), (pp + "_PROTO", proto.lower()), (pp + "_PORT", str(sp["port"])), (pp + "_ADDR", ip)]
    return out


def kubelet_services(all_services: list[dict[str, Any]], ns: str, links: bool) -> dict[str, dict[str, Any]]:
    """getServiceEnvVarMap: name -> Service the kubelet uses for a Pod in `ns`."""
    m: dict[str, dict[str, Any]] = {}
    for svc in all_services:
        if not ip_set(svc):
            continue
        name, sns = svc["metadata"]["name"], svc["metadata"]["namespace"]
        if sns == MASTER_NS and name == MASTER:
            m.setdefault(name, svc)
        elif sns == ns and links:
            m[name] = svc
    return m


def expected_env(chosen: list[dict[str, Any]], user_env: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Injected variables (Services sorted by name, kubelet order within; names the
    container defines itself left out) in front of the container's own env."""
    own = {n for n, _ in user_env}
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for svc in sorted(chosen, key=lambda s: (s["metadata"]["name"], s["metadata"]["namespace"])):
        for n, v in from_service(svc):
            if n in own or n in seen:
                continue
            seen.add(n)
            out.append((n, v))
    return out + list(user_env)


def expected_record(chosen: list[dict[str, Any]], ns: str, all_services: list[dict[str, Any]]) -> str:
    own_master = any(s["metadata"]["namespace"] == ns and s["metadata"]["name"] == MASTER and ip_set(s)
                     for s in all_services) and ns != MASTER_NS
    refs = []
    for svc in sorted(chosen, key=lambda s: (s["metadata"]["name"], s["metadata"]["namespace"])):
        name, sns = svc["metadata"]["name"], svc["metadata"]["namespace"]
        if sns == ns:
            refs.append(name)
        elif sns == MASTER_NS and name == MASTER:
            refs.append(f"{MASTER_NS}/{MASTER}" if own_master else MASTER)
        else:
            refs.append(f"{sns}/{name}")
    return ",".join(refs)


def diff_env(got: list[tuple[str, Any]], want: list[tuple[str, Any]]) -> str:
    if got == want:
        return ""
    gd, wd = dict(got), dict(want)
    missing = [n for n in wd if n not in gd]
    extra = [n for n in gd if n not in wd]
    wrong = [f"{n}={gd[n]!r} (want {wd[n]!r})" for n in wd if n in gd and gd[n] != wd[n]]
    order = "" if (missing or extra or wrong) else "same variables, different order"
    return (f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}; extra {extra[:8]}; wrong {wrong[:5]} {order}"
            f" (got {len(got)}, want {len(want)})")


def assert_kubelet_env(stored: dict[str, Any], all_services: list[dict[str, Any]],
                       user: dict[str, list[tuple[str, Any]]], links: bool = True,
                       init_user: dict[str, list[tuple[str, Any]]] | None = None) -> None:
    """Every (init) container carries exactly the kubelet's variables in front of its own env;
    enableServiceLinks is false; the record names what was injected."""
    ns = stored["metadata"]["namespace"]
    chosen = list(kubelet_services(all_services, ns, links).values())
    for kind, users in (("containers", user), ("initContainers", init_user or {})):
        got = envs(stored, kind)
        for cname, uenv in users.items():
            check(cname in got, f"{kind} {cname} not in the stored Pod")
            d = diff_env(got[cname], expected_env(chosen, uenv))
            check(not d, f"{kind} {cname} of Pod {ns}/{stored['metadata']['name']}: {d}")
    check(stored["spec"].get("enableServiceLinks") is False,
          f"enableServiceLinks is {stored['spec'].get('enableServiceLinks')!r}, want false")
    rec = annotations(stored).get("envlink.io/injected")
    want = expected_record(chosen, ns, all_services)
    check(rec == want, f"envlink.io/injected is {rec!r}, want {want!r}")


# ----------------------------------------------------------------------------------------
# certificates


def make_certs(d: Path) -> tuple[Path, Path, bytes]:
    """A CA and a serving certificate for 127.0.0.1/localhost; returns (cert, key, ca_pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envlink-e2e-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envlink-e2e")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (d / "ca.crt").write_bytes(ca_pem)
    (d / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "tls.crt", d / "tls.key", ca_pem


# ----------------------------------------------------------------------------------------
# envlink processes and their webhook registrations


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test runner dies, so no envlink outlives the run."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class Envlink:
    """One `envlink serve` on loopback, registered for namespaces labelled envlink-e2e=<name>."""

    def __init__(self, name: str, ctx: "Context", config: dict[str, Any] | None = None,
                 extra_args: list[str] | None = None, kubeconfig: Path | None = None) -> None:
        self.name = name
        self.kubeconfig = kubeconfig or ctx.kubeconfig
        self.extra_args = extra_args or []
        self.ctx = ctx
        self.port = free_port()
        self.metrics_port = free_port()
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = ctx.work / f"config-{name}.yaml"
            self.config_path.write_text(json.dumps(config))   # JSON is YAML
        self.log = ctx.work / f"envlink-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, wait_ready: bool = True) -> None:
        check(self.proc is None or self.proc.poll() is not None, f"envlink {self.name} already running")
        args = [self.ctx.envlink_bin, "serve",
                "--tls-cert", str(self.ctx.cert), "--tls-key", str(self.ctx.key),
                "--kubeconfig", str(self.kubeconfig),
                "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                "--shutdown-grace", "2s"]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        args += self.extra_args
        with open(self.log, "ab") as log:
            log.write(f"\n===== start {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={**os.environ, "RUST_LOG": os.environ.get("ENVLINK_E2E_RUST_LOG", "info")}, preexec_fn=_die_with_parent)
        wait_until(f"envlink {self.name} /healthz", self.healthy, timeout=30)
        if wait_ready:
            wait_until(f"envlink {self.name} /readyz", self.ready, timeout=60)

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise Fail(f"envlink {self.name} exited with {self.proc.returncode}: {self.log_tail()}")
        return http_get(self.metrics + "/healthz")[0] == 200

    def ready(self) -> bool:
        return self.readyz() == 200

    def readyz(self) -> int:
        return http_get(self.metrics + "/readyz")[0]

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled metric, None when /metrics does not answer."""
        status, body = http_get(self.metrics + "/metrics")
        if status != 200:
            return None
        for line in body.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        status, body = http_get(self.metrics + "/metrics")
        check(status == 200, f"/metrics answered {status}")
        total = 0.0
        for line in body.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
            if not m or m.group(1) != name:
                continue
            lab = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            if all(lab.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Fail(f"envlink {self.name} did not exit within 30s of SIGTERM")
        check(rc == 0, f"envlink {self.name} exited with {rc} on SIGTERM: {self.log_tail()}")

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def log_tail(self, n: int = 15) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def webhook_objects(self, failure_policy: str = "Fail") -> list[dict[str, Any]]:
        ca = base64.b64encode(self.ctx.ca_pem).decode()
        selector = {"matchLabels": {LABEL: self.name}}
        common = {"sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
                  "failurePolicy": failure_policy, "namespaceSelector": selector, "matchPolicy": "Equivalent"}
        url = f"https://127.0.0.1:{self.port}"
        return [
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
             "metadata": {"name": f"envlink-e2e-{self.name}"},
             "webhooks": [{"name": "mutate.envlink.io", **common, "reinvocationPolicy": "IfNeeded",
                           "clientConfig": {"url": url + "/mutate", "caBundle": ca},
                           "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                      "resources": ["pods"]}]}]},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
             "metadata": {"name": f"envlink-e2e-{self.name}"},
             "webhooks": [{"name": "validate.envlink.io", **common,
                           "clientConfig": {"url": url + "/validate", "caBundle": ca},
                           "rules": [
                               {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                "resources": ["pods"]},
                               {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                                "resources": ["pods/ephemeralcontainers"]},
                               {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
                               {"apiGroups": ["batch"], "apiVersions": ["v1", "v1beta1"],
                                "operations": ["CREATE", "UPDATE"], "resources": ["jobs", "cronjobs"]}]}]},
        ]

    def register(self, failure_policy: str = "Fail") -> None:
        apply_objs(self.webhook_objects(failure_policy))

    def unregister(self) -> None:
        kubectl("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration",
                f"envlink-e2e-{self.name}", "--ignore-not-found")


class Context:
    def __init__(self) -> None:
        self.kubeconfig = Path(os.environ["KUBECONFIG"])
        self.state = Path(os.environ.get("ENVLINK_STATE") or self.kubeconfig.parent)
        self.envlink_bin = os.environ.get("ENVLINK_BIN") or str(ROOT / "target" / "debug" / "envlink")
        self.work = Path(tempfile.mkdtemp(prefix="envlink-e2e-"))
        self.cert, self.key, self.ca_pem = make_certs(self.work)
        self.instances: dict[str, Envlink] = {}

    def testbed(self, *args: str) -> None:
        t0 = time.monotonic()
        p = subprocess.run(["bash", str(TESTBED), *args, str(self.state)], capture_output=True, text=True,
                           timeout=180)
        print(f"    testbed.sh {' '.join(args)}: {time.monotonic() - t0:.1f}s", flush=True)
        if p.returncode != 0:
            raise Fail(f"testbed.sh {' '.join(args)} failed: {p.stderr.strip()[-800:]}")

    def apiserver_pid(self) -> int:
        return int((self.state / "kube-apiserver.pid").read_text().strip())


def testbed_env() -> dict[str, str]:
    """The test bed's `STATE_DIR/env` (APISERVER_URL, APISERVER_TOKEN, APISERVER_CA, ...)."""
    return dict(line.split("=", 1) for line in (CTX.state / "env").read_text().splitlines() if "=" in line)


CTX: Context


def main_instance() -> Envlink:
    return CTX.instances["main"]


def wait_webhook_active(ns: str, want_injected: bool = True) -> None:
    """Webhook configurations reach the API server's admission chain through an informer:
    wait until a server-side dry run in `ns` shows envlink's mutation."""
    def probe() -> bool:
        r = create(pod("probe", ns), "--dry-run=server", "-o", "json", check_rc=False)
        if r.returncode != 0:
            return False
        return ("envlink.io/injected" in annotations(json.loads(r.stdout))) == want_injected
    wait_until(f"the webhooks to be active for namespace {ns}", probe, timeout=30)


def dry_run_pod(ns: str, name: str = "dry", **kw: Any) -> tuple[dict[str, Any], list[str]]:
    r = create(pod(name, ns, **kw), "--dry-run=server", "-o", "json")
    return json.loads(r.stdout), warnings_of(r.stderr)


def injected_services(p: dict[str, Any]) -> list[str]:
    rec = annotations(p).get("envlink.io/injected")
    return rec.split(",") if rec else []


def await_catalog(ns: str, links: bool = True, timeout: float = 30) -> None:
    """Waits until envlink's view of namespace `ns` matches what the API server stores
    (a server-side dry run records the kubelet's set of Services), so a Pod created next
    is not racing the watch."""
    def synced() -> bool | str:
        all_svcs = services_of_cluster()
        want = expected_record(list(kubelet_services(all_svcs, ns, links).values()), ns, all_svcs)
        got = annotations(dry_run_pod(ns)[0]).get("envlink.io/injected")
        return got == want or f"injected {got!r}, want {want!r}"
    wait_until(f"envlink's catalog to match the Services of {ns}", lambda: synced() is True, timeout=timeout)


def assert_catalog_matches(inst: Envlink, timeout: float = 60) -> None:
    """envlink_catalog_services equals the number of Services the API server has."""
    def same() -> bool | str:
        want = len(services_of_cluster())
        got = inst.metric("envlink_catalog_services")
        return got == want or f"envlink_catalog_services={got}, API server has {want}"
    wait_until("envlink_catalog_services to match the API server", lambda: same() is True, timeout=timeout)


# ----------------------------------------------------------------------------------------
# tests

TESTS: list[Callable[[], None]] = []


# Version gates: test name -> (predicate on the server, the reason it applies only there).
GATES: dict[str, tuple[Callable[[], bool], str]] = {}


def server_minor() -> int:
    """The API server's minor version (20 for 1.20.2)."""
    v = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]
    return int(re.match(r"\d+", v["minor"]).group(0))


def ipv6_run() -> bool:
    """Single-stack IPv6 Services (the run's default/kubernetes Service has an IPv6 IP)."""
    ip = get_json("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    return ":" in ip


def kubernetes_service_ip() -> str:
    return get_json("service", "kubernetes", "-n", "default")["spec"]["clusterIP"]


def test(fn: Callable[[], None] | None = None, *, only: str | None = None,
         reason: str = "") -> Any:
    """Registers a test. only="1.20"/"current" (minor >= 21)/"ipv6" gates it, with `reason`."""
    preds: dict[str, Callable[[], bool]] = {
        "1.20": lambda: server_minor() == 20,
        "current": lambda: server_minor() >= 21,
        "ipv6": ipv6_run,
    }

    def reg(f: Callable[[], None]) -> Callable[[], None]:
        TESTS.append(f)
        if only:
            assert reason, f"{f.__name__}: a version gate needs a reason"
            GATES[f.__name__] = (preds[only], f"{only} only: {reason}")
        return f
    return reg(fn) if fn is not None else reg


@test
def setup_envlink_and_webhooks() -> None:
    """Three envlink instances: `main` (default policy), `strip` and `warn` (reserved-variable
    actions), each registered by url for its own namespace label."""
    CTX.instances["main"] = Envlink("main", CTX)
    CTX.instances["strip"] = Envlink("strip", CTX, {"reserved": {"defaultAction": "strip"}})
    CTX.instances["warn"] = Envlink("warn", CTX, {"reserved": {"defaultAction": "warn"}})
    for inst in CTX.instances.values():
        inst.start()
        inst.register()
    # not registered as a webhook: only its readiness is watched during the outage test
    CTX.instances["strict"] = Envlink("strict", CTX, extra_args=["--max-staleness", "3s"])
    CTX.instances["strict"].start()
    for inst in CTX.instances.values():
        if inst.name == "strict":
            continue
        ns = namespace(f"e2e-probe-{inst.name}", inst.name)
        wait_webhook_active(ns)
    # System namespaces are not selected: a Pod in `default` is stored unchanged.
    p, _ = dry_run_pod("default")
    check("envlink.io/injected" not in annotations(p), "a Pod in `default` (not labelled) was mutated")


@test
def initial_list_mode_is_what_the_server_serves() -> None:
    """`--initial-list auto` (the default) streams the first list (sendInitialEvents) where the
    API server serves streaming lists and pages it elsewhere. What it chose is checked against
    the server itself: an envlink forced to stream becomes ready exactly when auto chose
    streaming. 1.20 cannot stream (auto pages); the current release on the testbed's etcd
    3.6 streams (on Debian's etcd 3.4 it refuses: its storage feature RequestWatchProgress is
    off; ENVLINK_TESTBED_ETCD=/usr/bin/etcd shows auto paging there)."""
    inst = main_instance()
    lines = [line for line in inst.log.read_text(errors="replace").splitlines()
             if "starting the watch" in line and "kind=Service " in line]
    check(lines, f"no 'starting the watch' line for Services in envlink's log: {inst.log_tail()}")
    modes = {("streaming" if "initial_list=streaming" in line else "paginated") for line in lines}
    check(len(modes) == 1, f"auto chose differently across restarts: {lines}")
    chosen = modes.pop()
    if server_minor() < 27:
        check(chosen == "paginated", f"1.{server_minor()} cannot stream lists, auto chose {chosen}")
    if server_minor() >= 34 and not os.environ.get("ENVLINK_TESTBED_ETCD"):
        check(chosen == "streaming", "the current release on the testbed's etcd 3.6 streams lists; auto chose paginated")
    forced = Envlink("forced-streaming", CTX, extra_args=["--initial-list", "streaming"])
    forced.start(wait_ready=False)
    try:
        if chosen == "streaming":
            wait_until("an envlink forced to stream is ready", forced.ready, timeout=60)
        else:
            time.sleep(8)
            check(not forced.ready(), f"auto chose paginated, yet a streaming first list completed: {forced.log_tail()}")
    finally:
        forced.stop()
    print(f"    auto chose {chosen}", flush=True)


@test
def kubelet_variables_variety_of_services() -> None:
    ns = namespace("e2e-variety")
    apply_objs([
        service("redis-master", ns, [{"port": 6379}]),                                    # unnamed, protocol defaulted
        service("web", ns, [{"name": "http", "port": 80, "targetPort": 8080},
                            {"name": "https", "port": 443, "protocol": "TCP"},
                            {"name": "metrics-port", "port": 9102}]),                      # multi-port, named, dashes
        service("dns", ns, [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),          # UDP + TCP on one port
        service("sctp-svc", ns, [{"name": "assoc", "port": 3868, "protocol": "SCTP"}]),   # SCTP
        service("syslog", ns, [{"port": 514, "protocol": "UDP"}]),                         # unnamed UDP
        service("headless", ns, [{"name": "db", "port": 5432}], clusterIP="None"),        # headless: nothing
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external", "namespace": ns},
         "spec": {"type": "ExternalName", "externalName": "db.example.invalid"}},          # ExternalName: nothing
        service("nodeport", ns, [{"name": "web", "port": 8080}], type="NodePort"),
    ])
    await_catalog(ns)
    user = [("REDIS_MASTER_SERVICE_HOST", "my-own-redis"),            # the user's value wins
            ("GREETING", "hello"),
            ("WEB_URL", "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT_HTTP)/")]
    user_b = [("DNS_PORT", "mine")]
    init_user = [("SETUP", "1")]
    p = pod("variety", ns,
            containers=[container("app", [{"name": n, "value": v} for n, v in user]),
                        container("sidecar", [{"name": n, "value": v} for n, v in user_b]),
                        container("bare")],
            init=[container("init", [{"name": n, "value": v} for n, v in init_user])])
    stored, warns = create_pod(p)
    all_svcs = services_of_cluster()
    assert_kubelet_env(stored, all_svcs, {"app": user, "sidecar": user_b, "bare": []},
                       init_user={"init": init_user})
    # sanity of the independent expectation itself: what must and must not be there
    names = {n for n, _ in envs(stored)["bare"]}
    for must in ("WEB_SERVICE_PORT_METRICS_PORT", "DNS_PORT_53_UDP_PROTO", "SCTP_SVC_PORT_3868_SCTP",
                 "SYSLOG_PORT", "KUBERNETES_SERVICE_HOST", "NODEPORT_SERVICE_HOST"):
        check(must in names, f"{must} not injected")
    check(not any(n.startswith(("HEADLESS_", "EXTERNAL_")) for n in names), "headless/ExternalName injected")
    app = dict(envs(stored)["app"])
    check(app["REDIS_MASTER_SERVICE_HOST"] == "my-own-redis", "the user's value did not survive")
    sctp_ip = next(s["spec"]["clusterIP"] for s in all_svcs
                   if s["metadata"]["namespace"] == ns and s["metadata"]["name"] == "sctp-svc")
    check(dict(envs(stored)["bare"])["SCTP_SVC_PORT"] == f"sctp://{join_host_port(sctp_ip, 3868)}", "SCTP URL")
    check(not warns, f"unexpected warnings: {warns}")


@test
def kubelet_variables_namespace_with_its_own_kubernetes_service() -> None:
    ns = namespace("e2e-own-master")
    apply_objs([service("kubernetes", ns, [{"name": "api", "port": 8443}]),
                service("backend", ns, [{"port": 8080}])])
    await_catalog(ns)
    stored, _ = create_pod(pod("links-on", ns))
    all_svcs = services_of_cluster()
    assert_kubelet_env(stored, all_svcs, {"app": []})
    own_ip = next(s["spec"]["clusterIP"] for s in all_svcs
                  if s["metadata"]["namespace"] == ns and s["metadata"]["name"] == "kubernetes")
    check(dict(envs(stored)["app"])["KUBERNETES_SERVICE_HOST"] == own_ip, "the namespace's own kubernetes must win")
    check(annotations(stored)["envlink.io/injected"] == "backend,kubernetes", "record")
    # enableServiceLinks: false -> only the API server's kubernetes Service (kubelet rule)
    stored, _ = create_pod(pod("links-off", ns, enableServiceLinks=False))
    assert_kubelet_env(stored, all_svcs, {"app": []}, links=False)
    check(dict(envs(stored)["app"])["KUBERNETES_SERVICE_HOST"] == kubernetes_service_ip(),
          "default/kubernetes expected")
    check(annotations(stored)["envlink.io/injected"] == "default/kubernetes", "record for links off")


@test
def kubelet_variables_many_services() -> None:
    ns = namespace("e2e-many")
    n = 120
    objs = []
    for i in range(n):
        ports = [{"port": 1000 + i}] if i % 3 else [{"name": "p-a", "port": 80},
                                                    {"name": "p-b", "port": 81, "protocol": "UDP"}]
        objs.append(service(f"svc-{i:03d}", ns, ports))
    apply_objs(objs)
    wait_until(f"{n} Services in {ns}", lambda: len(get_json("services", "-n", ns)["items"]) == n)
    user = [("SVC_000_SERVICE_HOST", "overridden"), ("X", "$(SVC_119_SERVICE_HOST)")]

    def ok() -> bool:
        # the watch may still be delivering the last Services: retry with dry runs first
        p, _ = dry_run_pod(ns)
        return len(injected_services(p)) == n + 1
    wait_until("all Services in the catalog", ok, timeout=30)
    stored, _ = create_pod(pod("many", ns, containers=[container("app", [{"name": k, "value": v} for k, v in user])]))
    assert_kubelet_env(stored, services_of_cluster(), {"app": user})


@test
def namespace_without_services_gets_kubernetes_only() -> None:
    ns = namespace("e2e-empty")
    stored, _ = create_pod(pod("lonely", ns, containers=[container("app", [{"name": "A", "value": "1"}])]))
    assert_kubelet_env(stored, services_of_cluster(), {"app": [("A", "1")]})
    check([n for n, _ in envs(stored)["app"]][:2] == ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"],
          "kubernetes variables first")
    check(annotations(stored)["envlink.io/injected"] == "kubernetes", "record")


@test
def services_annotation_narrows() -> None:
    ns = namespace("e2e-narrow")
    apply_objs([service("db", ns, [{"port": 5432}]), service("cache", ns, [{"port": 6379}]),
                service("queue", ns, [{"port": 5672}])])
    wait_until("3 Services visible to envlink",
               lambda: len(injected_services(dry_run_pod(ns)[0])) == 4)
    stored, _ = create_pod(pod("narrow", ns, annotations={"envlink.io/services": "queue, db"}))
    all_svcs = services_of_cluster()
    chosen = [s for s in all_svcs if (s["metadata"]["namespace"], s["metadata"]["name"])
              in ((ns, "queue"), (ns, "db"), ("default", "kubernetes"))]
    d = diff_env(envs(stored)["app"], expected_env(chosen, []))
    check(not d, f"narrowed env: {d}")
    check(annotations(stored)["envlink.io/injected"] == "db,kubernetes,queue", "record")
    check(stored["spec"]["enableServiceLinks"] is False, "enableServiceLinks")
    # a malformed list is refused with the value in the message
    msg = refused(pod("bad-list", ns, annotations={"envlink.io/services": "Queue;db"}))
    check("Queue;db" in msg, f"malformed annotation message: {msg}")
    # a headless Service named explicitly gives a warning
    apply_objs([service("hl", ns, [{"port": 1}], clusterIP="None")])
    def hl_warns() -> list[str]:
        _, w = dry_run_pod(ns, annotations={"envlink.io/services": "hl"})
        return [x for x in w if "hl" in x and "no cluster IP" in x]
    wait_until("a warning for a named headless Service", hl_warns, timeout=30)


@test
def inject_false_opts_out() -> None:
    ns = namespace("e2e-optout")
    apply_objs([service("db", ns, [{"port": 5432}])])
    user = [{"name": "A", "value": "1"}]
    stored, warns = create_pod(pod("optout", ns, containers=[container("app", user)],
                                   annotations={"envlink.io/inject": "false"}))
    check(envs(stored)["app"] == [("A", "1")], f"env changed: {envs(stored)['app']}")
    check("envlink.io/injected" not in annotations(stored), "injected annotation set")
    check(stored["spec"].get("enableServiceLinks") is True, "enableServiceLinks must stay the API default (true)")
    # ...but never out of the reserved rules
    msg = refused(pod("optout-gpu", ns, annotations={"envlink.io/inject": "false"},
                      containers=[container("app", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])]))
    check("NVIDIA_VISIBLE_DEVICES" in msg, f"reserved rule skipped with inject=false: {msg}")


@test
def missing_service_refused_then_admitted() -> None:
    ns = namespace("e2e-missing")
    p = pod("needs-later", ns, annotations={"envlink.io/services": "later-db"})
    msg = refused(p)
    check("later-db" in msg and "not found" in msg, f"message should name the missing Service: {msg}")
    check("admission webhook" in msg and "denied the request" in msg, f"not an admission denial: {msg}")
    check(kubectl("get", "pod", "needs-later", "-n", ns, check_rc=False).returncode != 0, "Pod stored")
    apply_objs([service("later-db", ns, [{"name": "pg", "port": 5432}])])
    # what a ReplicaSet controller would do: retry until admitted
    def admitted() -> bool:
        return create(p, check_rc=False).returncode == 0
    wait_until("the Pod to be admitted once the Service exists", admitted, timeout=30, interval=0.5)
    stored = get_json("pod", "needs-later", "-n", ns)
    all_svcs = services_of_cluster()
    chosen = [s for s in all_svcs if (s["metadata"]["namespace"], s["metadata"]["name"])
              in ((ns, "later-db"), ("default", "kubernetes"))]
    check(not diff_env(envs(stored)["app"], expected_env(chosen, [])), diff_env(envs(stored)["app"], expected_env(chosen, [])))


GPU = {"limits": {"nvidia.com/gpu": "1"}}


@test
def reserved_deny_pod() -> None:
    ns = namespace("e2e-reserved-deny")
    msg = refused(pod("gpu", ns, containers=[
        container("ok", [{"name": "A", "value": "1"}]),
        container("trainer", [{"name": "CUDA_MPS_PIPE_DIRECTORY", "value": "/tmp/x"}], resources=GPU)]))
    for part in ('container "trainer"', "CUDA_MPS_PIPE_DIRECTORY", "nvidia.com/gpu"):
        check(part in msg, f"denial should contain {part!r}: {msg}")
    # NVIDIA_VISIBLE_DEVICES is reserved in every container, GPU or not; also in init
    # containers and whatever the value source
    msg = refused(pod("no-gpu", ns, init=[container("setup", [
        {"name": "NVIDIA_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])]))
    for part in ('init container "setup"', "NVIDIA_VISIBLE_DEVICES", "nvidia.com/*"):
        check(part in msg, f"denial should contain {part!r}: {msg}")
    check(kubectl("get", "pods", "-n", ns, "-o", "name").stdout.strip() == "", "a refused Pod was stored")
    # not reserved: CUDA_VISIBLE_DEVICES; and the rule is per requesting container
    create_pod(pod("cuda", ns, containers=[container("app", [{"name": "CUDA_VISIBLE_DEVICES", "value": "0"},
                                                             {"name": "CUDA_MPS_PIPE_DIRECTORY", "value": "/x"}])]))


def deployment(name: str, ns: str, env: list[dict[str, Any]], resources: dict[str, Any] | None = None) -> dict[str, Any]:
    c = container("worker", env)
    if resources:
        c["resources"] = resources
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [c]}}}}


@test
def reserved_deny_deployment_template() -> None:
    ns = namespace("e2e-reserved-deploy")
    d = deployment("trainer", ns, [{"name": "HABANA_VISIBLE_DEVICES", "value": "all"}], {"limits": {"habana.ai/gaudi": "1"}})
    r = kubectl("apply", "-f", "-", stdin=json.dumps(d), check_rc=False)
    check(r.returncode != 0, "kubectl apply of the Deployment succeeded")
    for part in ("Deployment template", 'container "worker"', "HABANA_VISIBLE_DEVICES", "habana.ai/gaudi"):
        check(part in r.stderr, f"kubectl's error should contain {part!r}: {r.stderr}")
    check(kubectl("get", "deployment", "trainer", "-n", ns, check_rc=False).returncode != 0, "Deployment stored")
    # the same Deployment without the variable is accepted
    d = deployment("trainer", ns, [{"name": "OTHER", "value": "x"}], {"limits": {"habana.ai/gaudi": "1"}})
    kubectl("apply", "-f", "-", stdin=json.dumps(d))
    # an UPDATE that adds the name is refused as well
    d = deployment("trainer", ns, [{"name": "OTHER", "value": "x"}, {"name": "HL_VISIBLE_DEVICES", "value": "0"}],
                   {"limits": {"habana.ai/gaudi": "1"}})
    r = kubectl("apply", "-f", "-", stdin=json.dumps(d), check_rc=False)
    check(r.returncode != 0 and "HL_VISIBLE_DEVICES" in r.stderr, f"update adding a reserved name: {r.stderr}")


@test
def reserved_strip() -> None:
    ns = namespace("e2e-reserved-strip", "strip")
    stored, warns = create_pod(pod("strip", ns, containers=[container("trainer", [
        {"name": "KEEP", "value": "1"}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "ASCEND_VISIBLE_DEVICES", "value": "0"}], resources={"limits": {"huawei.com/Ascend910": "1"}})]))
    env = dict(envs(stored)["trainer"])
    check("NVIDIA_VISIBLE_DEVICES" not in env and "ASCEND_VISIBLE_DEVICES" not in env,
          f"reserved variables not stripped: {sorted(env)}")
    check(env.get("KEEP") == "1", "the user's other variable is gone")
    check("KUBERNETES_SERVICE_HOST" in env, "service variables still injected")
    for var in ("NVIDIA_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES"):
        check(any(var in w and "removed" in w and 'container "trainer"' in w for w in warns),
              f"kubectl should show a warning about {var}: {warns}")
    check(any("huawei.com/Ascend910" in w for w in warns), f"warning names the resource: {warns}")
    # on a workload template, strip warns that the Pods will lose the variable
    d = deployment("strip-deploy", ns, [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])
    r = kubectl("apply", "-f", "-", stdin=json.dumps(d))
    w = warnings_of(r.stderr)
    check(any("NVIDIA_VISIBLE_DEVICES" in x and "Deployment template" in x for x in w),
          f"template warning expected: {w}")


@test
def reserved_warn() -> None:
    ns = namespace("e2e-reserved-warn", "warn")
    stored, warns = create_pod(pod("warn", ns, containers=[container("app", [
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])]))
    env = dict(envs(stored)["app"])
    check(env.get("NVIDIA_VISIBLE_DEVICES") == "all", "warn must keep the variable")
    check(any("NVIDIA_VISIBLE_DEVICES" in w and 'container "app"' in w for w in warns),
          f"kubectl should show a warning: {warns}")


@test(only="1.20", reason="before 1.22 the pods/ephemeralcontainers review carries kind "
      "EphemeralContainers (the testbed turns the alpha EphemeralContainers gate on for 1.20)")
def ephemeral_containers_kind_1_20_refused() -> None:
    """On 1.20 (and 1.21) an ephemeral container is added by a PUT of an `EphemeralContainers`
    object to pods/NAME/ephemeralcontainers, and the review /validate gets carries that kind
    (not Pod). A reserved name in a debug container is refused with envlink's message and
    nothing is stored; an ordinary debug container is admitted and stored. A raw GET/PUT, so
    the request has exactly the 1.20 form whatever kubectl's `debug` would send."""
    ns = namespace("e2e-ephemeral-1-20")
    create_pod(pod("target", ns))
    path = f"/api/v1/namespaces/{ns}/pods/target/ephemeralcontainers"

    def put_with(name: str, env: list[dict[str, str]]) -> subprocess.CompletedProcess[str]:
        r = kubectl("get", "--raw", path, check_rc=False)
        check(r.returncode == 0, f"GET {path} failed (is the EphemeralContainers gate on?): {r.stderr}")
        obj = json.loads(r.stdout)
        check(obj.get("kind") == "EphemeralContainers", f"GET {path} returned kind {obj.get('kind')!r}")
        obj["ephemeralContainers"] = (obj.get("ephemeralContainers") or []) + [{
            "name": name, "image": "registry.invalid/debug:1", "command": ["sh"], "env": env,
            "stdin": True, "tty": True,
            "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}]
        f = CTX.work / f"ephemeral-{name}.json"
        f.write_text(json.dumps(obj))
        return kubectl("replace", "--raw", path, "-f", str(f), check_rc=False)

    r = put_with("dbg", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])
    check(r.returncode != 0, f"an EphemeralContainers PUT with a reserved variable was admitted: {r.stdout}")
    for part in ("validate.envlink.io", "denied the request", 'ephemeral container "dbg"',
                 "NVIDIA_VISIBLE_DEVICES"):
        check(part in r.stderr, f"the refusal should contain {part!r}: {r.stderr}")
    stored = get_json("pod", "target", "-n", ns)
    check(not stored["spec"].get("ephemeralContainers"),
          f"a refused ephemeral container was stored: {stored['spec'].get('ephemeralContainers')}")
    r = put_with("dbg2", [{"name": "DEBUG_LEVEL", "value": "2"}])
    check(r.returncode == 0, f"an EphemeralContainers PUT with an ordinary variable was refused: {r.stderr}")
    eph = get_json("pod", "target", "-n", ns)["spec"].get("ephemeralContainers") or []
    check([c["name"] for c in eph] == ["dbg2"], f"stored ephemeral containers: {eph}")
    check({"name": "DEBUG_LEVEL", "value": "2"} in (eph[0].get("env") or []), f"env of dbg2: {eph[0].get('env')}")


@test(only="current", reason="`kubectl debug` needs the pods/ephemeralcontainers subresource "
      "(GA in 1.25); since 1.22 its review carries kind Pod (1.20's kind: ephemeral_containers_kind_1_20_refused)")
def ephemeral_container_reserved_name_refused() -> None:
    """`kubectl debug` adds an ephemeral container (UPDATE of pods/ephemeralcontainers):
    /validate refuses a reserved name there, and admits an ordinary one."""
    ns = namespace("e2e-ephemeral")
    create_pod(pod("target", ns))
    r = kubectl("debug", "target", "-n", ns, "--image=registry.invalid/debug:1", "--container=dbg",
                "--env=NVIDIA_VISIBLE_DEVICES=all", "--attach=false", "--profile=general", check_rc=False)
    check(r.returncode != 0, f"kubectl debug with a reserved variable was admitted: {r.stdout}")
    for part in ("NVIDIA_VISIBLE_DEVICES", "dbg", "denied the request"):
        check(part in r.stderr, f"kubectl debug's error should contain {part!r}: {r.stderr}")
    stored = get_json("pod", "target", "-n", ns)
    check(not stored["spec"].get("ephemeralContainers"), "a refused ephemeral container was stored")
    r = kubectl("debug", "target", "-n", ns, "--image=registry.invalid/debug:1", "--container=dbg2",
                "--env=DEBUG_LEVEL=2", "--attach=false", "--profile=general", check_rc=False)
    check(r.returncode == 0, f"kubectl debug with an ordinary variable was refused: {r.stderr}")
    eph = get_json("pod", "target", "-n", ns)["spec"].get("ephemeralContainers") or []
    check([c["name"] for c in eph] == ["dbg2"], f"stored ephemeral containers: {eph}")
    check({"name": "DEBUG_LEVEL", "value": "2"} in (eph[0].get("env") or []), f"env of dbg2: {eph[0].get('env')}")


@test(only="current", reason="sidecar containers (init containers with restartPolicy: Always) "
      "do not exist in 1.20 (alpha 1.28, GA 1.33)")
def sidecar_containers_injected_and_checked() -> None:
    """Sidecars get the kubelet's variables like every container, and the reserved rules
    (deny, requesting scope, strip) apply to them."""
    ns = namespace("e2e-sidecar")
    apply_objs([service("db", ns, [{"port": 5432}]), service("web", ns, [{"name": "http", "port": 80}])])
    await_catalog(ns)
    side_env = [("MODE", "sidecar")]
    stored, warns = create_pod(pod("with-sidecar", ns, init=[
        container("setup"),
        container("proxy", [{"name": n, "value": v} for n, v in side_env], restartPolicy="Always")]))
    check([c.get("restartPolicy") for c in stored["spec"]["initContainers"]] == [None, "Always"],
          "the sidecar's restartPolicy was not kept")
    assert_kubelet_env(stored, services_of_cluster(), {"app": []},
                       init_user={"setup": [], "proxy": side_env})
    check(not warns, f"unexpected warnings: {warns}")
    # deny: a reserved name in a sidecar
    msg = refused(pod("sidecar-reserved", ns, init=[container(
        "proxy", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}], restartPolicy="Always")]))
    for part in ("NVIDIA_VISIBLE_DEVICES", '"proxy"'):
        check(part in msg, f"denial should contain {part!r}: {msg}")
    # requesting scope: CUDA_MPS_* is reserved only where the container requests a GPU
    msg = refused(pod("sidecar-gpu", ns, init=[container(
        "proxy", [{"name": "CUDA_MPS_PIPE_DIRECTORY", "value": "/x"}], restartPolicy="Always", resources=GPU)]))
    for part in ("CUDA_MPS_PIPE_DIRECTORY", '"proxy"', "nvidia.com/gpu"):
        check(part in msg, f"denial should contain {part!r}: {msg}")
    create_pod(pod("sidecar-no-gpu", ns, init=[container(
        "proxy", [{"name": "CUDA_MPS_PIPE_DIRECTORY", "value": "/x"}], restartPolicy="Always")]))
    # strip: the sidecar loses the variable, with a warning naming it
    ns2 = namespace("e2e-sidecar-strip", "strip")
    stored, warns = create_pod(pod("strip-sidecar", ns2, init=[container(
        "proxy", [{"name": "KEEP", "value": "1"}, {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}],
        restartPolicy="Always")]))
    env = dict(envs(stored, "initContainers")["proxy"])
    check("NVIDIA_VISIBLE_DEVICES" not in env and env.get("KEEP") == "1", f"strip in a sidecar: {sorted(env)}")
    check("KUBERNETES_SERVICE_HOST" in env, "service variables not injected into the sidecar")
    check(any("NVIDIA_VISIBLE_DEVICES" in w and "proxy" in w for w in warns), f"strip warning: {warns}")
    # a Deployment whose template has such a sidecar is refused by /validate
    d = deployment("sidecar-deploy", ns, [{"name": "A", "value": "1"}])
    d["spec"]["template"]["spec"]["initContainers"] = [container(
        "proxy", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}], restartPolicy="Always")]
    r = kubectl("apply", "-f", "-", stdin=json.dumps(d), check_rc=False)
    check(r.returncode != 0 and "NVIDIA_VISIBLE_DEVICES" in r.stderr and "Deployment template" in r.stderr,
          f"Deployment with a reserved sidecar variable: {r.stderr}")


ENV_FILES = [{"name": "envfiles", "emptyDir": {}}]


def file_ref(name: str) -> dict[str, Any]:
    # `optional: false` spelled out: the API server stores the default explicitly
    return {"name": name, "valueFrom": {"fileKeyRef": {"volumeName": "envfiles", "path": "app.env",
                                                        "key": name, "optional": False}}}


@test(only="current", reason="relaxed env var names (GA 1.34) and env[].valueFrom.fileKeyRef "
      "(EnvFiles, beta 1.35) are refused by 1.20's validation")
def relaxed_env_names_and_file_key_refs() -> None:
    """Names only relaxed validation allows (`my.var`, lower case, a leading digit) and
    fileKeyRef entries pass through untouched after the injected variables; the reserved
    check still goes by name, whatever the value source."""
    ns = namespace("e2e-relaxed")
    apply_objs([service("db", ns, [{"port": 5432}])])
    await_catalog(ns)
    env = [{"name": "my.var", "value": "1"}, {"name": "lower_case", "value": "x"},
           {"name": "1st-thing", "value": "y"}, file_ref("FROM_FILE"), {"name": "B", "value": "$(my.var)"}]
    stored, warns = create_pod(pod("relaxed", ns, containers=[container("app", env)], volumes=ENV_FILES))
    user = [(e["name"], e.get("value", e.get("valueFrom"))) for e in env]
    assert_kubelet_env(stored, services_of_cluster(), {"app": user})
    check(not warns, f"unexpected warnings: {warns}")
    msg = refused(pod("file-reserved", ns, containers=[container("app", [file_ref("NVIDIA_VISIBLE_DEVICES")])],
                      volumes=ENV_FILES))
    check("NVIDIA_VISIBLE_DEVICES" in msg and "denied the request" in msg, f"fileKeyRef with a reserved name: {msg}")
    # and a fileKeyRef may override an injected name, like any user variable
    stored, _ = create_pod(pod("file-override", ns, containers=[container("app", [file_ref("DB_SERVICE_HOST")])],
                               volumes=ENV_FILES))
    assert_kubelet_env(stored, services_of_cluster(),
                       {"app": [("DB_SERVICE_HOST", file_ref("DB_SERVICE_HOST")["valueFrom"])]})


@test(only="current", reason="Dynamic Resource Allocation (resource.k8s.io/v1, GA 1.34) does not "
      "exist in 1.20")
def dra_resource_claims_admitted_and_injected() -> None:
    """A Pod with resourceClaims from a ResourceClaimTemplate (no driver needed to admit it) is
    admitted and injected; its claims are kept; reserved names are still refused."""
    ns = namespace("e2e-dra")
    apply_objs([
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": "gpu.e2e.example.com"},
         "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.e2e.example.com'"}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
         "metadata": {"name": "one-gpu", "namespace": ns},
         "spec": {"spec": {"devices": {"requests": [
             {"name": "gpu", "exactly": {"deviceClassName": "gpu.e2e.example.com"}}]}}}},
        service("db", ns, [{"port": 5432}]),
    ])
    await_catalog(ns)
    claims = [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}]
    stored, warns = create_pod(pod("dra", ns, containers=[
        container("app", [{"name": "A", "value": "1"}], resources={"claims": [{"name": "gpu"}]})],
        resourceClaims=claims))
    assert_kubelet_env(stored, services_of_cluster(), {"app": [("A", "1")]})
    check(stored["spec"]["resourceClaims"] == claims, f"resourceClaims: {stored['spec'].get('resourceClaims')}")
    check(stored["spec"]["containers"][0]["resources"].get("claims") == [{"name": "gpu"}], "container claims")
    check(not warns, f"unexpected warnings: {warns}")
    msg = refused(pod("dra-reserved", ns, containers=[
        container("app", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}], resources={"claims": [{"name": "gpu"}]})],
        resourceClaims=claims))
    check("NVIDIA_VISIBLE_DEVICES" in msg, f"reserved name with a DRA claim: {msg}")


@test(only="ipv6", reason="only the IPv6 run (fd00:10:96::/108) has IPv6 Services")
def ipv6_service_variables() -> None:
    """The kubelet's variables for IPv6 cluster IPs, read back from the API server: host and
    _ADDR plain, brackets only inside the URLs."""
    ns = namespace("e2e-ipv6")
    apply_objs([service("web", ns, [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
                service("db", ns, [{"port": 5432}], ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")])
    await_catalog(ns)
    stored, _ = create_pod(pod("v6", ns))
    all_svcs = services_of_cluster()
    assert_kubelet_env(stored, all_svcs, {"app": []})
    env = dict(envs(stored)["app"])
    ips = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in all_svcs if s["metadata"]["namespace"] == ns}
    for name, ip in ips.items():
        check(ipaddress.ip_address(ip) in ipaddress.ip_network("fd00:10:96::/108"), f"{name} has IP {ip}")
    web = ips["web"]
    check(env["WEB_SERVICE_HOST"] == web, f"WEB_SERVICE_HOST={env['WEB_SERVICE_HOST']!r}")
    check(env["WEB_PORT"] == f"tcp://[{web}]:80", f"WEB_PORT={env['WEB_PORT']!r}")
    check(env["WEB_PORT_80_TCP_ADDR"] == web, f"WEB_PORT_80_TCP_ADDR={env['WEB_PORT_80_TCP_ADDR']!r}")
    check(env["WEB_PORT_53_UDP"] == f"udp://[{web}]:53", f"WEB_PORT_53_UDP={env['WEB_PORT_53_UDP']!r}")
    check(env["DB_PORT_5432_TCP"] == f"tcp://[{ips['db']}]:5432", f"DB_PORT_5432_TCP={env['DB_PORT_5432_TCP']!r}")
    kip = kubernetes_service_ip()
    check(":" in kip and env["KUBERNETES_SERVICE_HOST"] == kip and env["KUBERNETES_PORT"] == f"tcp://[{kip}]:443",
          f"kubernetes variables: {env['KUBERNETES_SERVICE_HOST']!r} {env['KUBERNETES_PORT']!r}")
    bad = [n for n, v in env.items() if n.endswith(("_SERVICE_HOST", "_ADDR")) and "[" in str(v)]
    check(not bad, f"brackets outside URLs: {bad}")
    bad = [n for n, v in env.items() if re.fullmatch(r".*_PORT(_\d+_(TCP|UDP|SCTP))?", n)
           and str(v).startswith(("tcp://", "udp://")) and "[" not in str(v)]
    check(not bad, f"IPv6 URLs without brackets: {bad}")


@test
def server_side_dry_run() -> None:
    ns = namespace("e2e-dry-run")
    apply_objs([service("api", ns, [{"name": "grpc", "port": 9000}])])
    wait_until("Service api in the catalog", lambda: "api" in injected_services(dry_run_pod(ns)[0]))
    r = create(pod("dry", ns, containers=[container("app", [{"name": "A", "value": "1"}])]),
               "--dry-run=server", "-o", "json")
    got = json.loads(r.stdout)
    assert_kubelet_env(got, services_of_cluster(), {"app": [("A", "1")]})
    check(kubectl("get", "pod", "dry", "-n", ns, check_rc=False).returncode != 0, "a dry-run Pod was stored")


@test
def watch_reflects_created_and_deleted_services() -> None:
    ns = namespace("e2e-watch")
    apply_objs([service("stays", ns, [{"port": 80}])])
    wait_until("stays", lambda: "stays" in injected_services(dry_run_pod(ns)[0]))
    t0 = time.monotonic()
    apply_objs([service("newcomer", ns, [{"port": 81}])])
    wait_until("a new Service in the next Pod", lambda: "newcomer" in injected_services(dry_run_pod(ns)[0]),
               timeout=20)
    t_add = time.monotonic() - t0
    stored, _ = create_pod(pod("after-add", ns))
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})
    t0 = time.monotonic()
    kubectl("delete", "service", "newcomer", "-n", ns)
    wait_until("a deleted Service gone from the next Pod",
               lambda: "newcomer" not in injected_services(dry_run_pod(ns)[0]), timeout=20)
    t_del = time.monotonic() - t0
    stored, _ = create_pod(pod("after-delete", ns))
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})
    check(t_add < 10 and t_del < 10, f"watch too slow: {t_add:.1f}s / {t_del:.1f}s")
    # a changed Service (new port) is reflected too
    apply_objs([service("stays", ns, [{"port": 8080}])])
    wait_until("an updated Service in the next Pod",
               lambda: dict(envs(dry_run_pod(ns)[0])["app"]).get("STAYS_SERVICE_PORT") == "8080", timeout=20)


@test
def envlink_restart_readiness() -> None:
    inst = main_instance()
    ns = namespace("e2e-envlink-restart")
    apply_objs([service("db", ns, [{"port": 5432}]), service("dns", ns, [{"name": "dns", "port": 53, "protocol": "UDP"}])])
    await_catalog(ns)
    inst.stop()
    check(inst.readyz() == 0, "envlink still answers after SIGTERM")
    # Freeze the API server so envlink's first list cannot complete: /readyz must say 503
    # (and /healthz 200) until it does. Then thaw it: ready, with the complete catalog.
    pid = CTX.apiserver_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        inst.start(wait_ready=False)
        statuses = []
        for _ in range(12):
            statuses.append(inst.readyz())
            time.sleep(0.25)
        check(all(s == 503 for s in statuses), f"/readyz before the first list: {statuses}, want 503")
        check(http_get(inst.metrics + "/healthz")[0] == 200, "/healthz must be 200 while not ready")
        check(inst.metric("envlink_catalog_ready") == 0, "envlink_catalog_ready should be 0")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until("/readyz 200 after the API server answers", inst.ready, timeout=60)
    check(inst.metric("envlink_catalog_ready") == 1, "envlink_catalog_ready should be 1")
    assert_catalog_matches(inst, timeout=5)   # complete at the moment it is ready
    stored, _ = create_pod(pod("after-restart", ns))
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})


@test
def apiserver_restarted_under_running_envlink() -> None:
    inst = main_instance()
    ns = namespace("e2e-apiserver-restart")
    other = namespace("e2e-apiserver-restart-other")
    apply_objs([service("before", ns, [{"port": 80}]), service("doomed", ns, [{"port": 81}])]
               + [service(f"keep-{i}", other, [{"name": "p", "port": 7000 + i}]) for i in range(25)])
    wait_until("before", lambda: len(injected_services(dry_run_pod(ns)[0])) == 3)
    restarts0 = inst.metric_sum("envlink_watch_restarts_total")
    # 1. a plain restart
    CTX.testbed("restart-apiserver")
    check(inst.ready(), "/readyz must stay 200 across an API server restart")
    apply_objs([service("after-restart", ns, [{"port": 82}])])
    wait_until("a Service created after the restart", lambda: "after-restart" in injected_services(dry_run_pod(ns)[0]),
               timeout=60)
    # 2. an outage: the watch fails and retries with backoff; envlink stays ready and keeps
    #    serving its catalog (checked once the API server is back, which is the only way a
    #    Pod gets admitted at all)
    #    It says so: envlink_watch_connected 0, staleness growing, /readyz names it; an
    #    instance with --max-staleness 3s turns unready.
    strict = CTX.instances["strict"]
    wait_until("the --max-staleness instance to be ready before the outage", strict.ready, timeout=90)
    CTX.testbed("stop-apiserver")
    wait_until("envlink_watch_connected 0 during the outage",
               lambda: inst.metric("envlink_watch_connected") == 0, timeout=15)
    wait_until("the --max-staleness 3s instance to turn unready", lambda: strict.readyz() == 503, timeout=15)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        check(inst.ready(), "/readyz must stay 200 while the API server is down (no --max-staleness)")
        time.sleep(1)
    body = http_get(inst.metrics + "/readyz")[1]
    check("disconnected" in body, f"/readyz should say the watch is disconnected: {body!r}")
    check((inst.metric("envlink_catalog_staleness_seconds") or 0) >= 3,
          f"envlink_catalog_staleness_seconds={inst.metric('envlink_catalog_staleness_seconds')}, want >= 3")
    CTX.testbed("start-apiserver")
    wait_until("envlink_watch_restarts_total to grow",
               lambda: inst.metric_sum("envlink_watch_restarts_total") > restarts0, timeout=30)
    apply_objs([service("after-outage", ns, [{"port": 83}])])
    kubectl("delete", "service", "before", "-n", ns)
    wait_until("the catalog to follow changes after the outage",
               lambda: set(injected_services(dry_run_pod(ns)[0])) == {"after-outage", "after-restart", "doomed",
                                                                      "kubernetes"}, timeout=60)
    # 3. a Service deleted while envlink's watch is down: freeze envlink, restart the API
    #    server (its watch connection is closed server side), delete `doomed` and create
    #    `born` through the new API server, thaw envlink. envlink never saw the old watch
    #    deliver the delete; it must re-establish the watch (or re-list) and drop it.
    #    A write while envlink is frozen moves etcd's revision past envlink's last one, so
    #    the restarted API server's watch cache cannot resume envlink's watch ("too old
    #    resource version", 410): envlink must re-list, and the re-list must drop `doomed`.
    restarts1 = inst.metric_sum("envlink_watch_restarts_total")
    inst.pause()
    try:
        kubectl("create", "configmap", "bump", "-n", ns, "--from-literal=k=v")
        CTX.testbed("restart-apiserver")
        kubectl("delete", "service", "doomed", "-n", ns)
        apply_objs([service("born", ns, [{"port": 84}])])
    finally:
        inst.resume()
    want = {"after-outage", "after-restart", "born", "kubernetes"}
    wait_until("the catalog to recover by itself (deleted gone, new present)",
               lambda: set(injected_services(dry_run_pod(ns)[0])) == want, timeout=90, interval=1)
    check(inst.metric_sum("envlink_watch_restarts_total") > restarts1,
          "envlink_watch_restarts_total did not grow: the watch was not broken")
    assert_catalog_matches(inst)
    wait_until("envlink_watch_connected 1 and staleness 0 after the recovery",
               lambda: inst.metric("envlink_watch_connected") == 1
               and inst.metric("envlink_catalog_staleness_seconds") == 0, timeout=30)
    wait_until("the --max-staleness instance to be ready again", strict.ready, timeout=90)
    stored, _ = create_pod(pod("after-recovery", ns))
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})
    # and nothing else was lost: another namespace's Pods still get everything
    stored, _ = create_pod(pod("after-recovery", other))
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})


class CuttableProxy:
    """A TCP relay on loopback in front of the API server whose connections can all be cut at
    once and which can refuse new ones for a while (reset, as a restarted load balancer or a
    network blip does): the API server itself stays up and keeps its watch cache."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server((host, 0), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.closed = False
        self.refusing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                self._reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _reset(s: socket.socket) -> None:
        # shutdown() first: close() alone does not wake the relay thread blocked in recv() on
        # this socket, and the kernel keeps the connection open until that call returns.
        for step in (lambda: s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
                     lambda: s.shutdown(socket.SHUT_RDWR), s.close):
            try:
                step()
            except OSError:
                pass

    def cut(self) -> int:
        """Resets every open connection; returns how many there were."""
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            self._reset(s)
        return len(conns)

    def blip(self, seconds: float) -> int:
        """Cuts every connection and resets new ones for `seconds`; returns how many were cut."""
        self.refusing = True
        try:
            cut = self.cut()
            time.sleep(seconds)
            return cut + self.cut()
        finally:
            self.refusing = False

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.cut()


@test
def watch_connection_cut_relists_and_reconnects() -> None:
    """The connections to the API server are cut and new ones refused for a few seconds while
    the API server stays up. The watches' retries fail (counted, envlink_watch_connected 0);
    once connections are accepted again, a watch resumed from its resourceVersion would
    succeed without a word (the watch cache still has it), so envlink lists afresh and is
    connected and current again within seconds — `/readyz` under `--max-staleness`
    included — and follows changes made after the cut."""
    env = testbed_env()
    url = urllib.parse.urlsplit(env["APISERVER_URL"])
    proxy = CuttableProxy(url.hostname or "", url.port or 443)
    netloc = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
    kubeconfig = CTX.work / "kubeconfig-cut"
    kubeconfig.write_text(CTX.kubeconfig.read_text().replace(env["APISERVER_URL"],
                                                             f"https://{netloc}:{proxy.port}"))
    check(f":{proxy.port}" in kubeconfig.read_text(), "the proxied kubeconfig names the proxy")
    inst = Envlink("cut", CTX, extra_args=["--max-staleness", "3s"], kubeconfig=kubeconfig)
    try:
        inst.start()
        ns = namespace("e2e-watch-cut", None)
        restarts0 = inst.metric_sum("envlink_watch_restarts_total")
        for attempt in range(3):
            cut = proxy.blip(4)
            check(cut > 0, "envlink had no connection through the proxy to cut")
            print(f"    cut {cut // 2} connection(s), refused new ones for 4 s", flush=True)
            check(inst.metric_sum("envlink_watch_restarts_total") > restarts0,
                  "envlink_watch_restarts_total did not grow: no watch retried during the blip")
            t0 = time.monotonic()
            wait_until("envlink connected and ready again after the cut",
                       lambda: inst.metric("envlink_watch_connected") == 1
                       and inst.metric("envlink_catalog_staleness_seconds") == 0 and inst.ready(), timeout=30)
            print(f"    attempt {attempt + 1}: connected and ready {time.monotonic() - t0:.1f}s after the blip",
                  flush=True)
            apply_objs([service(f"after-cut-{attempt}", ns, [{"port": 80 + attempt}])])
            assert_catalog_matches(inst, timeout=30)
            restarts0 = inst.metric_sum("envlink_watch_restarts_total")
    finally:
        inst.stop()
        proxy.close()


def forced_watcher_closes() -> int:
    """How often the API server has force-closed a watcher that fell behind."""
    log = CTX.state / "kube-apiserver.log"
    # 1.20: "Forcing watcher close due to unresponsiveness: ..."; current releases name the
    # resource: "Forcing services watcher close due to unresponsiveness: ..."
    return len(re.findall(r"Forcing (?:\S+ )?watcher close due to unresponsiveness",
                          log.read_text(errors="replace")))


class ApiWriter:
    """Writes straight to the API server over keep-alive HTTPS connections from a few threads.
    kubectl (discovery, a GET and a three-way merge per object) is ~10x slower, and the burst
    below must fill the buffers in front of a frozen watcher before its watch times out."""

    def __init__(self, threads: int = 4) -> None:
        env = testbed_env()
        url = urllib.parse.urlsplit(env["APISERVER_URL"])
        self.host, self.port = url.hostname or "", url.port or 443
        self.headers = {"Authorization": f"Bearer {env['APISERVER_TOKEN']}", "Accept": "application/json"}
        self.tls = ssl.create_default_context(cafile=env["APISERVER_CA"])
        self.local = threading.local()
        self.pool = concurrent.futures.ThreadPoolExecutor(threads)

    def _send(self, method: str, path: str, body: dict[str, Any] | None, content_type: str) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=60)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={**self.headers, "Content-Type": content_type})
        r = conn.getresponse()
        text = r.read()
        if r.status >= 300:
            raise Fail(f"{method} {path}: HTTP {r.status}: {text[:300]!r}")

    def all(self, requests: list[tuple[str, str, dict[str, Any] | None]],
            content_type: str = "application/json") -> None:
        """Sends every (method, path, body), several at once; raises on the first error."""
        for f in [self.pool.submit(self._send, m, p, b, content_type) for m, p, b in requests]:
            f.result()

    def close(self) -> None:
        self.pool.shutdown()


@test
def watch_survives_a_burst_while_envlink_is_frozen() -> None:
    """A burst of creates, updates and deletes while envlink cannot read its watch (frozen
    with SIGSTOP, as a starved or swapping process would be): the API server's watch cache
    gives up on the full watcher and force-closes it. Once thawed, envlink must resume from
    its last resourceVersion (or re-list on 410 Gone) and hold exactly the Services the API
    server has: nothing lost, nothing deleted left behind, every update seen.

    envlink's watches end after 30 s (it asks for timeoutSeconds=30); a watch that ends while
    envlink is frozen is closed by the API server normally, not forced. So each attempt starts
    from a fresh watch (envlink restarted just before), writes as fast as the API server takes
    it, and stops writing once the forced close is seen or 20 s have passed; an attempt that
    saw none is repeated (the catalog must match after it too), at most three times."""
    inst = main_instance()
    ns = namespace("e2e-burst")
    old = [service(f"old-{i:02d}", ns, [{"port": 9000 + i}]) for i in range(20)]
    apply_objs(old)
    await_catalog(ns)
    n = 300
    # two named ports each: 13 variables per Service, ~3,900 in all (under maxVariables)
    ports = [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]
    base = f"/api/v1/namespaces/{ns}/services"
    writer = ApiWriter()
    try:
        for attempt in range(1, 4):
            inst.stop()
            inst.start()
            closes0 = forced_watcher_closes()
            inst.pause()
            t0 = time.monotonic()
            rounds = 0
            try:
                if attempt == 1:
                    writer.all([("POST", base, service(f"burst-{i:03d}", ns, ports)) for i in range(n)])
                # updates: a new port number on every burst Service and a 60 KB annotation, so
                # the events fill the socket buffers between the API server and the frozen
                # envlink (what makes the API server's watch cache give up on it)
                while time.monotonic() - t0 < 20 and forced_watcher_closes() == closes0:
                    rounds += 1
                    bulk = f"{attempt}-{rounds}-" + "x" * 60_000
                    patch = {"metadata": {"annotations": {"e2e/bulk": bulk}},
                             "spec": {"ports": [{**ports[0], "port": 8080}, ports[1]]}}
                    writer.all([("PATCH", f"{base}/burst-{i:03d}", patch) for i in range(n)],
                               "application/merge-patch+json")
                    time.sleep(0.5)   # the cacher gives a blocked watcher up to ~0.1 s
                if attempt == 1:
                    writer.all([("DELETE", f"{base}/{o['metadata']['name']}", None) for o in old[:15]])
            finally:
                inst.resume()
            closes = forced_watcher_closes() - closes0
            print(f"    attempt {attempt}: {rounds} round(s) of {n} updates of 60 KB in "
                  f"{time.monotonic() - t0:.1f}s; the API server force-closed {closes} watcher(s)", flush=True)
            # The 1.20 API server leaves a force-closed watch open and silent until its
            # timeoutSeconds (30 s): that bounds how long envlink can be behind.
            t1 = time.monotonic()
            assert_catalog_matches(inst, timeout=60)
            await_catalog(ns, timeout=30)
            print(f"    envlink caught up {time.monotonic() - t1:.1f}s after it was thawed", flush=True)
            if closes > 0:
                break
        else:
            raise Fail("three bursts did not make the API server force-close envlink's watch: "
                       "this test no longer exercises what it is meant to")
    finally:
        writer.close()
    stored, _ = create_pod(pod("after-burst", ns))
    env = dict(envs(stored)["app"])
    check(env.get("BURST_299_SERVICE_PORT_HTTP") == "8080", "an update made during the burst is missing")
    check("OLD_00_SERVICE_HOST" not in env and "OLD_19_SERVICE_HOST" in env,
          "deletes made during the burst are not reflected")
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})


@test
def apiserver_unreachable_when_envlink_starts() -> None:
    inst = main_instance()
    ns = namespace("e2e-late-start")
    apply_objs([service("db", ns, [{"port": 5432}]), service("web", ns, [{"name": "http", "port": 80}])])
    await_catalog(ns)
    inst.stop()
    CTX.testbed("stop-apiserver")
    try:
        inst.start(wait_ready=False)
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            check(inst.readyz() == 503, f"/readyz is {inst.readyz()} without an API server, want 503")
            check(http_get(inst.metrics + "/healthz")[0] == 200, "/healthz must be 200")
            time.sleep(0.5)
    finally:
        CTX.testbed("start-apiserver")
    t0 = time.monotonic()
    wait_until("/readyz 200 once the API server is there", inst.ready, timeout=90, interval=0.5)
    print(f"    (ready {time.monotonic() - t0:.1f}s after the API server)", flush=True)
    assert_catalog_matches(inst, timeout=5)
    stored, _ = create_pod(pod("late-start", ns))
    assert_kubelet_env(stored, services_of_cluster(), {"app": []})


@test
def envlink_down_failure_policy() -> None:
    inst = main_instance()
    ns = namespace("e2e-down")
    inst.stop()
    try:
        msg = refused(pod("fail-closed", ns))
        check("failed calling webhook" in msg and f"127.0.0.1:{inst.port}" in msg,
              f"failurePolicy Fail: message should say the webhook call failed: {msg}")
        check(kubectl("get", "pod", "fail-closed", "-n", ns, check_rc=False).returncode != 0, "Pod stored")
        inst.register("Ignore")
        def admitted() -> bool:
            return create(pod("fail-open", ns), check_rc=False).returncode == 0
        wait_until("failurePolicy Ignore to admit the Pod", admitted, timeout=30)
        stored = get_json("pod", "fail-open", "-n", ns)
        check("envlink.io/injected" not in annotations(stored), "mutated although envlink is down")
        check(envs(stored)["app"] == [], f"env added: {envs(stored)['app']}")
        check(stored["spec"].get("enableServiceLinks") is True, "enableServiceLinks must stay true")
    finally:
        inst.register("Fail")
        inst.start()
    wait_webhook_active(ns)
    create_pod(pod("back", ns))


@test
def metrics_count_reviews() -> None:
    inst = main_instance()
    before = inst.metric_sum("envlink_admission_requests_total", endpoint="mutate", decision="patched")
    denied = inst.metric_sum("envlink_admission_requests_total", decision="denied")
    create_pod(pod("counted", "e2e-empty"))
    refused(pod("counted-denied", "e2e-empty", containers=[container("app", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0"}])]))
    check(inst.metric_sum("envlink_admission_requests_total", endpoint="mutate", decision="patched") >= before + 1,
          "patched counter did not grow")
    check(inst.metric_sum("envlink_admission_requests_total", decision="denied") >= denied + 1,
          "denied counter did not grow")
    check(inst.metric_sum("envlink_catalog_namespaces") >= 1, "envlink_catalog_namespaces")


# ----------------------------------------------------------------------------------------


def main() -> int:
    global CTX
    # -k NAME (or ENVLINK_E2E_ONLY=NAME): only the scenarios whose name contains NAME (local use)
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else os.environ.get("ENVLINK_E2E_ONLY")
    if not os.environ.get("KUBECONFIG"):
        print("e2e: KUBECONFIG is not set (run through tests/e2e/run.sh)", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    CTX = Context()
    print(f"e2e: envlink {CTX.envlink_bin}, kubeconfig {CTX.kubeconfig}, logs in {CTX.work}", flush=True)
    passed = failed = 0
    not_applicable: list[str] = []
    setup_failed: str | None = None
    print(f"e2e: kube-apiserver 1.{server_minor()}, IP family {'IPv6' if ipv6_run() else 'IPv4'}", flush=True)
    t_all = time.monotonic()
    try:
        for t in TESTS:
            name = t.__name__
            if only and only not in name and t is not setup_envlink_and_webhooks:
                continue
            t0 = time.monotonic()
            if name in GATES:
                applies, why = GATES[name]
                try:
                    ok = applies()
                except Exception as e:  # noqa: BLE001 - cannot tell: a failure, not a skip
                    failed += 1
                    print(f"FAIL {name}: cannot evaluate its version gate: {e}", flush=True)
                    continue
                if not ok:
                    not_applicable.append(f"{name} ({why})")
                    print(f"N/A  {name}: {why}", flush=True)
                    continue
            if setup_failed and t is not setup_envlink_and_webhooks:
                failed += 1
                print(f"FAIL {name}: not run, setup failed ({setup_failed})", flush=True)
                continue
            try:
                t()
                passed += 1
                print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            except Exception as e:  # noqa: BLE001 — every failure is a test failure
                failed += 1
                reason = str(e) if isinstance(e, Fail) else f"{type(e).__name__}: {e}"
                print(f"FAIL {name} ({time.monotonic() - t0:.1f}s): {reason}", flush=True)
                if not isinstance(e, Fail):
                    traceback.print_exc()
                if t is setup_envlink_and_webhooks:
                    setup_failed = reason[:200]
                # a failed test may have left the API server or envlink stopped: bring them back
                recover()
    finally:
        for inst in CTX.instances.values():
            try:
                inst.unregister()
            except Exception as e:  # noqa: BLE001
                print(f"e2e: cleanup: {e}", file=sys.stderr)
            try:
                inst.stop()
            except Exception as e:  # noqa: BLE001
                print(f"e2e: cleanup: {e}", file=sys.stderr)
                failed += 1
                print(f"FAIL clean_shutdown_{inst.name}: {e}")
    if failed or os.environ.get("ENVLINK_E2E_KEEP") == "1":
        print(f"e2e: {time.monotonic() - t_all:.0f}s; envlink logs kept in {CTX.work}", flush=True)
    else:
        shutil.rmtree(CTX.work, ignore_errors=True)
        print(f"e2e: {time.monotonic() - t_all:.0f}s", flush=True)
    if not_applicable:
        print(f"e2e: {len(not_applicable)} scenario(s) not applicable to this API server "
              f"(version-gated, see the module docstring): {', '.join(not_applicable)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def recover() -> None:
    """After a failure: make sure the API server runs and envlink instances are up again,
    so one failing test does not fail all the following ones."""
    try:
        pidfile = CTX.state / "kube-apiserver.pid"
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pid = None
        if pid is None:
            CTX.testbed("start-apiserver")
        try:
            wait_until("the API server to be ready again",
                       lambda: kubectl("get", "--raw", "/readyz", check_rc=False).stdout.strip() == "ok",
                       timeout=60, interval=1)
        except Fail:
            CTX.testbed("stop-apiserver")
            CTX.testbed("start-apiserver")
        for inst in CTX.instances.values():
            if inst.proc is not None and inst.proc.poll() is None:
                inst.resume()
            else:
                inst.start()
            if inst.name != "strict":
                inst.register()
    except Exception as e:  # noqa: BLE001
        print(f"e2e: recovery after a failure failed: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
