//! Property tests: for generated Services and Pods, what envlink puts into each container
//! equals an independent formulation of the kubelet's rules (written here from
//! `kubelet_pods.go`/`envvars.go`, sharing no code with `envlink::servicelinks`); a second run
//! changes nothing; the user's own values are never replaced; reserved names are never
//! injected.

use std::collections::HashMap;
use std::net::IpAddr;

use envlink::admission::{self, Object, Operation, Request, Verdict};
use envlink::catalog::Catalog;
use envlink::config::Policy;
use envlink::reserved::NoConfigMaps;
use envlink::servicelinks::{LinkPort, ServiceLink};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The kubelet, restated: `getServiceEnvVarMap` + `FromServices`. `None` when two Services
/// would write the same name with different values (the kubelet's answer then depends on Go's
/// map order, so no single answer is right).
fn reference(services: &[ServiceLink], ns: &str, links: bool) -> Option<HashMap<String, String>> {
    let mut by_name: HashMap<&str, &ServiceLink> = HashMap::new();
    for s in services {
        if s.cluster_ip.is_empty() || s.cluster_ip == "None" {
            continue;
        }
        if s.namespace == "default" && s.name == "kubernetes" {
            by_name.entry(&s.name).or_insert(s);
        } else if s.namespace == ns && links {
            by_name.insert(&s.name, s);
        }
    }
    let mut env: HashMap<String, String> = HashMap::new();
    let mut put = |k: String, v: String| -> bool {
        match env.get(&k) {
            Some(old) if *old != v => false,
            _ => {
                env.insert(k, v);
                true
            }
        }
    };
    for s in by_name.values() {
        let up = |x: &str| x.to_ascii_uppercase().replace('-', "_");
        let p = up(&s.name);
        let ip = &s.cluster_ip;
        let host_port = |port: i32| match ip.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{ip}]:{port}"),
            _ => format!("{ip}:{port}"),
        };
        let mut ok = put(format!("{p}_SERVICE_HOST"), ip.clone());
        ok &= put(format!("{p}_SERVICE_PORT"), s.ports[0].port.to_string());
        for sp in &s.ports {
            if !sp.name.is_empty() {
                ok &= put(
                    format!("{p}_SERVICE_PORT_{}", up(&sp.name)),
                    sp.port.to_string(),
                );
            }
        }
        for (i, sp) in s.ports.iter().enumerate() {
            let proto = if sp.protocol.is_empty() {
                "TCP"
            } else {
                &sp.protocol
            };
            let url = format!("{}://{}", proto.to_lowercase(), host_port(sp.port));
            if i == 0 {
                ok &= put(format!("{p}_PORT"), url.clone());
            }
            let pp = format!("{p}_PORT_{}_{}", sp.port, proto.to_uppercase());
            ok &= put(pp.clone(), url);
            ok &= put(format!("{pp}_PROTO"), proto.to_lowercase());
            ok &= put(format!("{pp}_PORT"), sp.port.to_string());
            ok &= put(format!("{pp}_ADDR"), ip.clone());
        }
        if !ok {
            return None;
        }
    }
    Some(env)
}

fn dns_name() -> impl Strategy<Value = String> {
    // Short names over a small alphabet, so Services share names across namespaces and
    // port names repeat; `kubernetes` often, to exercise the master-Service rules.
    prop_oneof![
        3 => "[a-e]([a-e0-9-]{0,5}[a-e0-9])?",
        1 => Just("kubernetes".to_string()),
    ]
}

fn cluster_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1u8..=254, 0u8..=255).prop_map(|(a, b)| format!("10.96.{a}.{b}")),
        2 => (1u16..=0xffff).prop_map(|x| format!("fd00::{x:x}")),
        1 => Just("None".to_string()),
        1 => Just(String::new()),
    ]
}

fn ports() -> impl Strategy<Value = Vec<LinkPort>> {
    let port = (
        prop_oneof![Just(String::new()), "[a-d]([a-d-]{0,4}[a-d])?"],
        prop_oneof![Just(80), Just(443), Just(53), 1i32..=65535],
        prop_oneof![Just(""), Just("TCP"), Just("UDP"), Just("SCTP")],
    )
        .prop_map(|(name, port, protocol)| LinkPort {
            name,
            port,
            protocol: protocol.to_string(),
        });
    prop::collection::vec(port, 1..4).prop_map(|mut ports| {
        // API validation: port names unique, (port, protocol) unique, only the first unnamed
        // when there are several.
        let mut seen = std::collections::HashSet::new();
        ports.retain(|p| seen.insert((p.port, p.protocol.clone())));
        let mut names = std::collections::HashSet::new();
        let many = ports.len() > 1;
        for (i, p) in ports.iter_mut().enumerate() {
            if (many && p.name.is_empty()) || !names.insert(p.name.clone()) {
                p.name = format!("p{i}");
            }
        }
        ports
    })
}

fn services() -> impl Strategy<Value = Vec<ServiceLink>> {
    let service = (
        prop_oneof![Just("default"), Just("team"), Just("other")],
        dns_name(),
        cluster_ip(),
        ports(),
    )
        .prop_map(|(ns, name, cluster_ip, ports)| ServiceLink {
            namespace: ns.to_string(),
            name,
            cluster_ip,
            ports,
        });
    prop::collection::vec(service, 0..14).prop_map(|list| {
        // One Service per namespace/name, as in a cluster.
        let mut seen = std::collections::HashSet::new();
        list.into_iter()
            .filter(|s| seen.insert((s.namespace.clone(), s.name.clone())))
            .collect()
    })
}

/// User env names: some are service-variable names (to test "the user wins"), some not.
fn user_env() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        "[A-E]{1,3}_SERVICE_HOST",
        "[A-E]{1,3}_PORT",
        Just("KUBERNETES_SERVICE_HOST".to_string()),
        "USER_[A-Z]{1,4}",
    ];
    prop::collection::vec((name, "[a-z0-9$()_]{0,8}"), 0..5).prop_map(|list| {
        let mut seen = std::collections::HashSet::new();
        list.into_iter()
            .filter(|(n, _)| seen.insert(n.clone()))
            .collect()
    })
}

fn pod_for(ns: &str, links: bool, containers: &[Vec<(String, String)>]) -> Value {
    let containers: Vec<Value> = containers
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let mut c = json!({"name": format!("c{i}"), "image": "x"});
            if !env.is_empty() {
                c["env"] = Value::Array(
                    env.iter()
                        .map(|(n, v)| json!({"name": n, "value": v}))
                        .collect(),
                );
            }
            c
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": ns},
        "spec": {"containers": containers, "enableServiceLinks": links}
    })
}

fn run(catalog: &Catalog, policy: &Policy, ns: &str, pod: &Value) -> (admission::Decision, Value) {
    let pod_json = serde_json::value::to_raw_value(pod).expect("serialises");
    let request = Request {
        operation: Operation::Create,
        group: "",
        kind: "Pod",
        sub_resource: None,
        namespace: ns,
        object: Some(Object::Text(&pod_json)),
        old_object: None,
    };
    let decision = admission::mutate(&request, &catalog.snapshot(), policy, &NoConfigMaps);
    let patch = decision.patch.to_patch().expect("reads back");
    let direct: json_patch::Patch =
        serde_json::from_slice(&decision.patch.to_json().expect("writes")).expect("valid JSON");
    assert_eq!(
        direct, patch,
        "the server's JSON writer and json_patch disagree"
    );
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("patch applies");
    (decision, out)
}

fn env_pairs(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn containers_get_exactly_the_kubelets_variables(
        list in services(),
        ns in prop_oneof![Just("default"), Just("team"), Just("empty")],
        links in any::<bool>(),
        containers in prop::collection::vec(user_env(), 1..4),
        shuffle_seed in any::<u64>(),
    ) {
        // The kubelet iterates its lister in no particular order: feed the reference a
        // shuffled copy, so only order-independent rules can pass.
        let mut shuffled = list.clone();
        let n = shuffled.len();
        if n > 1 {
            let mut x = shuffle_seed;
            for i in (1..n).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (x >> 33) as usize % (i + 1));
            }
        }
        let Some(want) = reference(&shuffled, ns, links) else {
            return Err(TestCaseError::reject("colliding names: the kubelet's answer is random"));
        };
        let (catalog, errors) = Catalog::from_links(list);
        prop_assert!(errors.is_empty());
        let pod = pod_for(ns, links, &containers);
        let (decision, out) = run(&catalog, &Policy::default(), ns, &pod);
        prop_assert_eq!(&decision.verdict, &Verdict::Allow);
        prop_assert_eq!(decision.variables, want.len());

        for (i, user) in containers.iter().enumerate() {
            let got = env_pairs(&out["spec"]["containers"][i]);
            // No name twice.
            let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            prop_assert_eq!(before, names.len(), "duplicate names in {:?}", got);
            // The user's entries, unchanged and in order, at the end.
            prop_assert_eq!(&got[got.len() - user.len()..], &user[..]);
            // Everything else is exactly the kubelet's set minus the user's names.
            let injected: HashMap<String, String> =
                got[..got.len() - user.len()].iter().cloned().collect();
            let expected: HashMap<String, String> = want
                .iter()
                .filter(|(k, _)| !user.iter().any(|(n, _)| n == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            prop_assert_eq!(injected, expected);
        }
        prop_assert_eq!(&out["spec"]["enableServiceLinks"], &json!(false));

        // Idempotent: envlink on its own output changes nothing.
        let (again, twice) = run(&catalog, &Policy::default(), ns, &out);
        prop_assert!(again.patch.is_empty(), "second patch: {:?}", again.patch);
        prop_assert_eq!(twice, out);
    }

    #[test]
    fn reserved_names_are_never_injected(list in services(), ns in prop_oneof![Just("team"), Just("default")]) {
        let policy = Policy::from_yaml(
            "reserved:\n  rules:\n    - name: a-prefix\n      prefixes: [A]\n      scope: all\n    \
             - name: b-ports\n      patterns: ['B[A-Z0-9_]*_PORT']\n      scope: all\n",
            "test",
        ).expect("policy");
        let (catalog, _) = Catalog::from_links(list);
        let pod = pod_for(ns, true, &[vec![], vec![]]);
        let (decision, out) = run(&catalog, &policy, ns, &pod);
        prop_assert_eq!(&decision.verdict, &Verdict::Allow);
        for i in 0..2 {
            for (name, _) in env_pairs(&out["spec"]["containers"][i]) {
                prop_assert!(!name.starts_with('A'), "{}", name);
                prop_assert!(!(name.starts_with('B') && name.ends_with("_PORT")), "{}", name);
            }
        }
    }

    #[test]
    fn named_services_are_a_subset_of_the_kubelets_and_user_values_survive(
        list in services(),
        pick in prop::collection::vec(0usize..14, 0..4),
        user in user_env(),
    ) {
        let (catalog, _) = Catalog::from_links(list.clone());
        let existing: Vec<&ServiceLink> = list.iter().filter(|s| s.namespace == "team").collect();
        let names: Vec<String> = pick
            .iter()
            .filter_map(|i| existing.get(*i % existing.len().max(1)).map(|s| s.name.clone()))
            .collect();
        let mut pod = pod_for("team", true, std::slice::from_ref(&user));
        pod["metadata"]["annotations"] = json!({"envlink.io/services": names.join(",")});
        let (decision, out) = run(&catalog, &Policy::default(), "team", &pod);
        prop_assert_eq!(&decision.verdict, &Verdict::Allow);
        let got = env_pairs(&out["spec"]["containers"][0]);
        prop_assert_eq!(&got[got.len() - user.len()..], &user[..]);
        if let Some(all) = reference(&list, "team", true) {
            for (name, value) in &got[..got.len() - user.len()] {
                // A named `kubernetes` may be default's where the kubelet would use the
                // namespace's own only when that one has no cluster IP; every other variable
                // must be one the kubelet would give, with its value.
                if name.starts_with("KUBERNETES_") { continue; }
                prop_assert_eq!(all.get(name), Some(value), "{}", name);
            }
        }
    }
}
