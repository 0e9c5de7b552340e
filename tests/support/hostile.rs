//! The worst inputs a Pod author can write, one generator per step of a review, each sized
//! to a target number of bytes (the API server's object limit is 3 MiB; a review carries an
//! object and, on UPDATE, the old one). Shared by `tests/hostile_input.rs` (answers are
//! correct and bounded) and `benches/hostile.rs` (time grows linearly with size).
//!
//! Objects are written as JSON text directly: building a `serde_json::Value` of millions of
//! items would make the generator, not envlink, the expensive part.

// Each includer uses a different part.
#![allow(dead_code)]

use std::fmt::Write;

/// The API server's largest object (etcd's request limit as the API server enforces it).
pub const OBJECT_LIMIT: usize = 3 * 1024 * 1024;

/// The API server's limit on all annotations of one object together.
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;

/// One hostile class: which endpoint, which policy, and the review body.
pub struct Case {
    /// `mutate` or `validate`.
    pub endpoint: &'static str,
    /// The policy (YAML) envlink runs with.
    pub policy: &'static str,
    /// The AdmissionReview.
    pub body: Vec<u8>,
}

/// Every class, by name, at `size` bytes of object.
pub fn all(size: usize) -> Vec<(&'static str, Case)> {
    vec![
        ("missing_services_annotation", missing_services(size)),
        ("forged_injected_record", forged_record(size)),
        ("distinct_resource_names", resource_names(size)),
        ("ephemeral_update_old_findings", ephemeral_update(size)),
        ("strip_in_many_containers", strip_containers(size)),
        ("many_containers", many_containers(size)),
        ("unread_array_of_numbers", unread_numbers(size)),
        ("refused_at_the_last_env_entry", late_invalid_env(size)),
    ]
}

/// A review of `object` (JSON text) for a Pod in namespace `shop`.
pub fn review(
    operation: &str,
    sub_resource: Option<&str>,
    object: &str,
    old: Option<&str>,
) -> Vec<u8> {
    let sub = sub_resource.map_or(String::new(), |s| format!(r#""subResource":"{s}","#));
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},{sub}"namespace":"shop","operation":"{operation}","userInfo":{{"username":"mallory"}},"object":{object},"oldObject":{}}}}}"#,
        old.unwrap_or("null")
    )
    .into_bytes()
}

fn pod(annotations: &str, spec_fields: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"hostile","namespace":"shop","annotations":{{{annotations}}}}},"spec":{{{spec_fields}"enableServiceLinks":true}}}}"#
    )
}

/// Items `item(i)` for i = 0, 1, ... joined by commas until the text is `bytes` long; and
/// how many items that took.
fn joined(bytes: usize, mut item: impl FnMut(&mut String, usize)) -> (String, usize) {
    let mut out = String::with_capacity(bytes + 256);
    let mut i = 0usize;
    while out.len() < bytes {
        if i > 0 {
            out.push(',');
        }
        item(&mut out, i);
        i += 1;
    }
    (out, i)
}

/// A comma-separated list of names that do not exist, `bytes` long.
fn names(prefix: &str, bytes: usize) -> String {
    joined(bytes, |out, i| {
        let _ = write!(out, "{prefix}{i}");
    })
    .0
}

/// `envlink.io/services` naming tens of thousands of Services that do not exist.
pub fn missing_services(size: usize) -> Case {
    let list = names("nope-", size);
    Case {
        endpoint: "mutate",
        policy: "",
        body: review(
            "CREATE",
            None,
            &pod(
                &format!(r#""envlink.io/services":"{list}""#),
                r#""containers":[{"name":"app"}],"#,
            ),
            None,
        ),
    }
}

/// A forged `envlink.io/injected` record of tens of thousands of names.
pub fn forged_record(size: usize) -> Case {
    let list = names("ghost-", size);
    Case {
        endpoint: "mutate",
        policy: "",
        body: review(
            "CREATE",
            None,
            &pod(
                &format!(r#""envlink.io/injected":"{list}""#),
                r#""containers":[{"name":"app"}],"#,
            ),
            None,
        ),
    }
}

/// One container requesting a hundred thousand distinct resources and setting tens of
/// thousands of reserved names (the sriov rule reserves `PCIDEVICE_*` everywhere).
pub fn resource_names(size: usize) -> Case {
    let (resources, _) = joined(size / 2, |out, i| {
        let _ = write!(out, r#""example.com/r{i}":"1""#);
    });
    let (env, _) = joined(size / 2, |out, i| {
        let _ = write!(out, r#"{{"name":"PCIDEVICE_X{i}","value":"0"}}"#);
    });
    let spec = format!(
        r#""containers":[{{"name":"app","resources":{{"requests":{{{resources}}},"limits":{{{resources}}}}},"env":[{env}]}}],"#
    );
    Case {
        endpoint: "mutate",
        policy: "",
        body: review("CREATE", None, &pod("", &spec), None),
    }
}

fn debug_containers(bytes: usize) -> (String, usize) {
    joined(bytes, |out, i| {
        let _ = write!(
            out,
            r#"{{"name":"dbg{i}","env":[{{"name":"NVIDIA_VISIBLE_DEVICES","value":"all"}}]}}"#
        );
    })
}

/// `pods/ephemeralcontainers` UPDATE whose old object already holds tens of thousands of
/// reserved names; the new object adds one more debug container with one.
pub fn ephemeral_update(size: usize) -> Case {
    let (old_list, n) = debug_containers(size);
    let new_list = format!(
        r#"{old_list},{{"name":"dbg{n}","env":[{{"name":"NVIDIA_VISIBLE_DEVICES","value":"all"}}]}}"#
    );
    let spec =
        |list: &str| format!(r#""containers":[{{"name":"app"}}],"ephemeralContainers":[{list}],"#);
    Case {
        endpoint: "validate",
        policy: "",
        body: review(
            "UPDATE",
            Some("ephemeralcontainers"),
            &pod("", &spec(&new_list)),
            Some(&pod("", &spec(&old_list))),
        ),
    }
}

/// `strip` over thousands of containers, each with a reserved name and an ordinary one.
pub fn strip_containers(size: usize) -> Case {
    let (list, _) = joined(size, |out, i| {
        let _ = write!(
            out,
            r#"{{"name":"c{i}","env":[{{"name":"NVIDIA_VISIBLE_DEVICES","value":"all"}},{{"name":"KEEP","value":"{i}"}}]}}"#
        );
    });
    Case {
        endpoint: "mutate",
        policy: "reserved: {defaultAction: strip}\n",
        body: review(
            "CREATE",
            None,
            &pod("", &format!(r#""containers":[{list}],"#)),
            None,
        ),
    }
}

/// As many tiny containers as fit: each would get every service variable of the namespace.
pub fn many_containers(size: usize) -> Case {
    let (list, _) = joined(size, |out, i| {
        let _ = write!(out, r#"{{"name":"c{i}"}}"#);
    });
    Case {
        endpoint: "mutate",
        policy: "",
        body: review(
            "CREATE",
            None,
            &pod("", &format!(r#""containers":[{list}],"#)),
            None,
        ),
    }
}

/// A field envlink never reads holding a huge array of small numbers.
pub fn unread_numbers(size: usize) -> Case {
    let (numbers, _) = joined(size, |out, _| out.push('1'));
    Case {
        endpoint: "mutate",
        policy: "",
        body: review(
            "CREATE",
            None,
            &pod(
                "",
                &format!(r#""containers":[{{"name":"app"}}],"unread":[{numbers}],"#),
            ),
            None,
        ),
    }
}

/// Containers with ordinary `env` entries filling the object, and one entry at the very end
/// that is not an object: the one-pass decode fails only there, so the body is decoded field
/// by field, then the Pod's decode fails, then the path-tracking decode explains where — the
/// most passes any review costs.
pub fn late_invalid_env(size: usize) -> Case {
    let (list, _) = joined(size, |out, i| {
        let _ = write!(
            out,
            r#"{{"name":"c{i}","env":[{{"name":"A","value":"1"}},{{"name":"B","valueFrom":{{"fieldRef":{{"fieldPath":"metadata.name"}}}}}}]}}"#
        );
    });
    Case {
        endpoint: "mutate",
        policy: "",
        body: review(
            "CREATE",
            None,
            &pod(
                "",
                &format!(r#""containers":[{list},{{"name":"last","env":[{{"name":"A"}},7]}}],"#),
            ),
            None,
        ),
    }
}
