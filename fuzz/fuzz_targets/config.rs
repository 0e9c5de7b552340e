//! The configuration parser: arbitrary text must give a policy or an error, never a panic.
//! A policy that loads is then used once (its rules compiled from the file's globs, prefixes
//! and patterns) on a Pod with a few variables.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = envlink::config::Policy::from_yaml(text, "fuzz") else {
        return;
    };
    let pod = serde_json::json!({
        "metadata": {"name": "p", "namespace": "shop",
                     "annotations": {"envlink.io/services": "redis-master, prod/db"}},
        "spec": {"containers": [{
            "name": "c",
            "resources": {"limits": {"nvidia.com/gpu": 1, "example.com/dev": 1}},
            "env": [
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                {"name": "EXAMPLE_DEVICES", "value": "0"},
                {"name": "QAT0", "value": "x"},
                {"name": "PCIDEVICE_X", "value": "y"}
            ]
        }]}
    });
    let state = envlink_fuzz::state(envlink_fuzz::catalog(), policy);
    envlink_fuzz::check_pod(&pod, &state);
});
