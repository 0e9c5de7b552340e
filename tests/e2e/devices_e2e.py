#!/usr/bin/env python3
"""End-to-end tests of the device-stack features through a *current* kube-apiserver (1.34+:
`resource.k8s.io/v1` and `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicy).

    KUBECONFIG=/path/to/kubeconfig ENVLINK_BIN=target/debug/envlink \
        python3 tests/e2e/devices_e2e.py [-k NAME]

Standalone: it needs only kubectl (KUBECTL, default `kubectl`), an API server reachable through
KUBECONFIG that can call webhooks on 127.0.0.1, and the envlink binary. No nodes, no DRA
driver: DeviceClasses, ResourceClaimTemplates and Pods are only admitted, never scheduled.
Checks go through the API server with server-side dry runs (webhooks and policies run,
nothing is stored), so the run leaves nothing behind but what it cleans up at the end.

It starts `envlink serve --dev --kubeconfig` on loopback (self-signed certificate, its CA in
the run's directory) and registers it for namespaces labelled `envlink-devices-e2e=<run>`:

- every built-in pack: a Pod requesting the pack's resource and setting one of its names is
  refused by envlink through the API server, and by `envlink mutate` offline;
- DRA: a DeviceClass `gpu.nvidia.com`, a ResourceClaimTemplate and a ResourceClaim of that
  class; a Pod consuming either gets a warning that its `NVIDIA_IMEX_CHANNELS` will be ignored
  (CDI wins), `NVIDIA_VISIBLE_DEVICES` is still refused (every container), a Pod without the
  claim gets nothing;
- the native policy (`envlink policy`): with envlink stopped and both webhooks at
  `failurePolicy: Ignore`, the API server itself refuses a Pod with `NVIDIA_VISIBLE_DEVICES=all`
  and a Deployment with `PCIDEVICE_X`, and admits a clean Pod.

Output: one `PASS name` / `FAIL name: reason` line per test, then `N passed, M failed`. Exit
status 1 when anything failed (a missing API is a failure, not a skip).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

KUBECTL = os.environ.get("KUBECTL", "kubectl")
LABEL = "envlink-devices-e2e"
POLICY = "envlink-reserved-variables-devices-e2e"


class Fail(Exception):
    pass


def check(cond: Any, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubectl(*args: str, stdin: str | None = None, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check_rc and r.returncode != 0:
        raise Fail(f"kubectl {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def apply(objs: list[dict[str, Any]]) -> None:
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))


def dry_run(obj: dict[str, Any]) -> tuple[bool, str, list[str]]:
    """Creates `obj` with a server-side dry run: (admitted, error text, warnings)."""
    r = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(obj), check_rc=False)
    warnings = [line.split("Warning: ", 1)[1] for line in r.stderr.splitlines() if "Warning: " in line]
    return r.returncode == 0, r.stderr.strip(), warnings


def http_get(url: str) -> int:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=3) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def container(env: dict[str, str] | None = None, limits: dict[str, str] | None = None,
              claims: list[str] | None = None, name: str = "app") -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "busybox", "command": ["sleep", "3600"]}
    if env:
        c["env"] = [{"name": k, "value": v} for k, v in env.items()]
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if claims:
        resources["claims"] = [{"name": n} for n in claims]
    if resources:
        c["resources"] = resources
    return c


def pod(name: str, ns: str, containers: list[dict[str, Any]], claims: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": containers}
    if claims:
        spec["resourceClaims"] = claims
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns}, "spec": spec}


class Run:
    def __init__(self) -> None:
        self.envlink_bin = os.environ.get("ENVLINK_BIN", "target/debug/envlink")
        self.kubeconfig = os.environ.get("KUBECONFIG", "")
        self.id = f"r{int(time.time()) % 100000}{os.getpid() % 1000}"
        self.work = Path(tempfile.mkdtemp(prefix="envlink-devices-e2e-"))
        self.ns = f"devices-e2e-{self.id}"
        self.port = free_port()
        self.metrics_port = free_port()
        self.ca = self.work / "ca.pem"
        self.log = self.work / "envlink.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # --- envlink ---------------------------------------------------------------------------

    def start(self) -> None:
        args = [self.envlink_bin, "serve", "--dev", "--dev-ca-out", str(self.ca),
                "--kubeconfig", self.kubeconfig,
                "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                "--shutdown-grace", "2s", "--log-format", "json"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_until("envlink /readyz", lambda: self.alive() and http_get(f"http://127.0.0.1:{self.metrics_port}/readyz") == 200,
                   timeout=60)

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise Fail(f"envlink exited with {self.proc.returncode}: {self.log_tail()}")
        return True

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 10) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def webhooks(self, failure_policy: str) -> list[dict[str, Any]]:
        ca = base64.b64encode(self.ca.read_bytes()).decode()
        common = {"sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 10,
                  "failurePolicy": failure_policy, "matchPolicy": "Equivalent",
                  "namespaceSelector": {"matchLabels": {LABEL: self.id}}}
        url = f"https://127.0.0.1:{self.port}"
        name = f"envlink-devices-e2e-{self.id}"
        return [
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
             "metadata": {"name": name},
             "webhooks": [{"name": "mutate.envlink.io", **common, "reinvocationPolicy": "IfNeeded",
                           "clientConfig": {"url": url + "/mutate", "caBundle": ca},
                           "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                      "resources": ["pods"]}]}]},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
             "metadata": {"name": name},
             "webhooks": [{"name": "validate.envlink.io", **common,
                           "clientConfig": {"url": url + "/validate", "caBundle": ca},
                           "rules": [
                               {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                "resources": ["pods"]},
                               {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
                               {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                "resources": ["jobs", "cronjobs"]}]}]},
        ]

    # --- cluster objects -------------------------------------------------------------------

    def setup(self) -> None:
        check(self.kubeconfig, "KUBECONFIG is not set")
        check(Path(self.envlink_bin).exists(), f"ENVLINK_BIN {self.envlink_bin} does not exist")
        apply([{"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.ns, "labels": {LABEL: self.id}}}])

    def cleanup(self) -> None:
        self.stop()
        name = f"envlink-devices-e2e-{self.id}"
        for args in (
            ("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", name),
            ("delete", "validatingadmissionpolicybinding", f"{POLICY}-{self.id}"),
            ("delete", "validatingadmissionpolicy", f"{POLICY}-{self.id}"),
            ("delete", "deviceclass", "gpu.nvidia.com"),
            ("delete", "namespace", self.ns, "--wait=false"),
        ):
            kubectl(*args, "--ignore-not-found", check_rc=False)

    def served(self, group_version: str, resource: str) -> bool:
        r = kubectl("api-resources", f"--api-group={group_version.split('/')[0]}", "-o", "name", check_rc=False)
        versions = kubectl("api-versions", check_rc=False).stdout.split()
        return r.returncode == 0 and group_version in versions and any(
            line.split(".")[0] == resource for line in r.stdout.split())


# --- tests -----------------------------------------------------------------------------------

# One Pod per pack: (pack, resource limit or None for every-container rules, variable).
PACK_PODS = [
    ("nvidia", "nvidia.com/gpu", "NVIDIA_GDS"),
    ("nvidia (every container)", None, "NVIDIA_VISIBLE_DEVICES"),
    ("hami", "nvidia.com/gpu", "CUDA_DISABLE_CONTROL"),
    ("habana", "habana.ai/gaudi", "HABANA_VISIBLE_DEVICES"),
    ("ascend", "huawei.com/Ascend910", "ASCEND_RUNTIME_OPTIONS"),
    ("ascend (every container)", None, "ASCEND_VISIBLE_DEVICES"),
    ("neuron", "aws.amazon.com/neuroncore", "NEURON_RT_VISIBLE_CORES"),
    ("neuron (every container)", None, "AWS_NEURON_VISIBLE_DEVICES"),
    ("intel-fpga", "fpga.intel.com/af-d8424dc4a4a3c413f89e433683f9040b", "FPGA_AFU_1"),
    ("intel-qat", "qat.intel.com/generic", "QAT0"),
    ("cambricon", "cambricon.com/mlu370", "CAMBRICON_VISIBLE_DEVICES"),
    ("sriov", None, "PCIDEVICE_INTEL_COM_SRIOV_NET_A"),
]


def pack_pod(run: Run, i: int, resource: str | None, variable: str) -> dict[str, Any]:
    limits = {resource: "1"} if resource else None
    return pod(f"pack-{i}", run.ns, [container({variable: "x"}, limits=limits)])


def test_every_pack_is_refused_through_the_api_server(run: Run) -> None:
    for i, (pack, resource, variable) in enumerate(PACK_PODS):
        ok, err, _ = dry_run(pack_pod(run, i, resource, variable))
        check(not ok, f"{pack}: a Pod with {variable} ({resource}) was admitted")
        check(variable in err and "envlink" in err, f"{pack}: refusal does not name {variable}: {err}")
    # The same names without the resource are not reserved (scope `requesting`).
    ok, err, _ = dry_run(pod("pack-free", run.ns, [container({"NVIDIA_GDS": "x", "QAT0": "1"})]))
    check(ok, f"a Pod without devices was refused: {err}")


def test_every_pack_is_refused_by_envlink_mutate(run: Run) -> None:
    for i, (pack, resource, variable) in enumerate(PACK_PODS):
        path = run.work / f"pack-{i}.json"
        path.write_text(json.dumps(pack_pod(run, i, resource, variable)))
        r = subprocess.run([run.envlink_bin, "mutate", "--pod", str(path)], capture_output=True, text=True,
                           timeout=60, env={k: v for k, v in os.environ.items() if k != "ENVLINK_CONFIG"})
        check(r.returncode == 1, f"{pack}: envlink mutate exited {r.returncode}: {r.stderr.strip()}")
        check(variable in r.stderr, f"{pack}: {r.stderr.strip()}")


def dra_objects(run: Run) -> None:
    apply([
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
         "metadata": {"name": "gpu.nvidia.com"}, "spec": {}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
         "metadata": {"name": "one-gpu", "namespace": run.ns},
         "spec": {"spec": {"devices": {"requests": [
             {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}}}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
         "metadata": {"name": "shared-gpu", "namespace": run.ns},
         "spec": {"devices": {"requests": [
             {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}}},
    ])


def test_dra_pods_are_in_scope_of_their_device_class(run: Run) -> None:
    check(run.served("resource.k8s.io/v1", "resourceclaims"), "the API server does not serve resource.k8s.io/v1")
    dra_objects(run)
    for source in ({"resourceClaimTemplateName": "one-gpu"}, {"resourceClaimName": "shared-gpu"}):
        p = pod("dra", run.ns, [container({"NVIDIA_IMEX_CHANNELS": "0"}, claims=["gpu"])],
                claims=[{"name": "gpu", **source}])

        def warned() -> list[str] | None:
            ok, err, warnings = dry_run(p)
            check(ok, f"DRA Pod ({source}) refused: {err}")
            hits = [w for w in warnings if "NVIDIA_IMEX_CHANNELS" in w and "gpu.nvidia.com" in w]
            return hits or None

        # envlink learns the claim and template from its watch: wait for it.
        hits = wait_until(f"a warning for the DRA Pod ({source})", warned, timeout=30)
        check(any("ignored" in w for w in hits), f"the warning does not say the value is ignored: {hits}")
        # NVIDIA_VISIBLE_DEVICES is refused in every container, DRA or not.
        p2 = pod("dra-nvd", run.ns, [container({"NVIDIA_VISIBLE_DEVICES": "all"}, claims=["gpu"])],
                 claims=[{"name": "gpu", **source}])
        ok, err, _ = dry_run(p2)
        check(not ok and "NVIDIA_VISIBLE_DEVICES" in err, f"DRA Pod with NVIDIA_VISIBLE_DEVICES: {ok} {err}")
    # No claim, no device class: nothing to say.
    ok, err, warnings = dry_run(pod("no-dra", run.ns, [container({"NVIDIA_IMEX_CHANNELS": "0"})]))
    check(ok and not any("NVIDIA_IMEX_CHANNELS" in w for w in warnings), f"{ok} {err} {warnings}")


def install_native_policy(run: Run) -> None:
    out = subprocess.run([run.envlink_bin, "policy", "--no-binding"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "ENVLINK_CONFIG"})
    check(out.returncode == 0, f"envlink policy: {out.stderr}")
    path = run.work / "native-policy.yaml"
    path.write_text(out.stdout)
    # Renamed for this run, and bound to this run's namespace only: the API server may be shared.
    objs = json.loads(kubectl("create", "--dry-run=client", "-o", "json", "-f", str(path)).stdout)
    items = objs.get("items", [objs])
    check([o["kind"] for o in items] == ["ValidatingAdmissionPolicy"], f"envlink policy printed {items}")
    policy = items[0]
    policy["metadata"]["name"] = f"{POLICY}-{run.id}"
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": f"{POLICY}-{run.id}"},
               "spec": {"policyName": f"{POLICY}-{run.id}", "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {LABEL: run.id}}}}}
    apply([policy, binding])


def test_native_policy_holds_while_envlink_is_down(run: Run) -> None:
    check(run.served("admissionregistration.k8s.io/v1", "validatingadmissionpolicies"),
          "the API server does not serve admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy")
    install_native_policy(run)
    apply(run.webhooks("Ignore"))
    run.stop()
    bad = pod("native", run.ns, [container({"NVIDIA_VISIBLE_DEVICES": "all"})])

    def refused() -> str | None:
        ok, err, _ = dry_run(bad)
        return None if ok else err

    # The API server compiles and caches a new policy asynchronously: wait for it.
    err = wait_until("the API server to refuse NVIDIA_VISIBLE_DEVICES=all", refused, timeout=60)
    check("ValidatingAdmissionPolicy" in err and f"{POLICY}-{run.id}" in err,
          f"not refused by the native policy: {err}")
    check("NVIDIA_VISIBLE_DEVICES" in err and "nvidia-visible-devices" in err,
          f"the message does not name the variable and rule: {err}")
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "native-deploy", "namespace": run.ns},
                  "spec": {"selector": {"matchLabels": {"app": "x"}},
                           "template": {"metadata": {"labels": {"app": "x"}},
                                        "spec": {"containers": [container({"PCIDEVICE_X": "1"})]}}}}
    ok, err, _ = dry_run(deployment)
    check(not ok and "PCIDEVICE_X" in err, f"Deployment with PCIDEVICE_X: {ok} {err}")
    gpu = pod("native-gpu", run.ns, [container({"HABANA_VISIBLE_DEVICES": "0"}, limits={"habana.ai/gaudi": "1"})])
    ok, err, _ = dry_run(gpu)
    check(not ok and "HABANA_VISIBLE_DEVICES" in err, f"Gaudi Pod with HABANA_VISIBLE_DEVICES: {ok} {err}")
    ok, err, _ = dry_run(pod("native-ok", run.ns, [container({"CUDA_VISIBLE_DEVICES": "0"},
                                                             limits={"nvidia.com/gpu": "1"})]))
    check(ok, f"a clean Pod was refused with envlink down: {err}")


TESTS = [
    test_every_pack_is_refused_through_the_api_server,
    test_every_pack_is_refused_by_envlink_mutate,
    test_dra_pods_are_in_scope_of_their_device_class,
    # Last: it stops envlink.
    test_native_policy_holds_while_envlink_is_down,
]


def main() -> int:
    only = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else None
    run = Run()
    passed = failed = 0
    try:
        try:
            run.setup()
            run.start()
            apply(run.webhooks("Fail"))
        except Exception as e:  # noqa: BLE001 - setup failure fails every test
            print(f"FAIL setup: {e} {run.log_tail()}")
            print(f"0 passed, {len(TESTS)} failed")
            return 1
        for test in TESTS:
            if only and only not in test.__name__:
                continue
            start = time.monotonic()
            try:
                test(run)
                passed += 1
                print(f"PASS {test.__name__} ({time.monotonic() - start:.1f}s)", flush=True)
            except Fail as e:
                failed += 1
                print(f"FAIL {test.__name__}: {e}", flush=True)
            except Exception:  # noqa: BLE001
                failed += 1
                print(f"FAIL {test.__name__}: {traceback.format_exc()}", flush=True)
    finally:
        run.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
