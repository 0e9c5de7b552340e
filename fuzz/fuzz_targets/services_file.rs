//! The Service file parser (`--services-file`, `envlink mutate --services`): arbitrary text
//! must give Services or an error, never a panic. Services that parse go into a catalog, and
//! a Pod in each of their namespaces is admitted against it (invariants of `check_pod`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(links) = envlink::catalog::file::parse_services(text, "fuzz", "default") else {
        return;
    };
    let mut namespaces: Vec<String> = links.iter().map(|l| l.namespace.clone()).collect();
    namespaces.sort();
    namespaces.dedup();
    namespaces.truncate(4);
    let (catalog, _errors) = envlink::catalog::Catalog::from_links(links);
    let state = envlink_fuzz::state(
        std::sync::Arc::new(catalog),
        envlink::config::Policy::default(),
    );
    for namespace in namespaces {
        let pod = serde_json::json!({
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "$(B)"}]}]}
        });
        envlink_fuzz::check_pod(&pod, &state);
    }
});
