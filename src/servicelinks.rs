//! The kubelet's service-link variables, as pure functions (no I/O).
//!
//! This mirrors `pkg/kubelet/envvars/envvars.go` (`FromServices`, `makeLinkVariables`); the
//! Service selection of `pkg/kubelet/kubelet_pods.go` (`getServiceEnvVarMap`) is
//! `admission::selection::kubelet_selection`, on the catalog. Every detail
//! here is observable in a container's environment, so the code follows the Go code rule by
//! rule; `tests/kubelet_properties.rs` checks it against an independent formulation.

/// Kubernetes' `default` namespace, the one spelling of it in envlink: where the kubelet takes
/// the master Service from (`--master-service-namespace`), and the namespace of an object
/// (or a Service in a file) that names none and arrives without one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The one "master" Service the kubelet always links, even with `enableServiceLinks: false`.
pub const MASTER_SERVICE_NAME: &str = "kubernetes";

/// The parts of a Service that the kubelet reads for its variables, and nothing else.
///
/// Keeping only these fields is what lets the catalog hold 100,000 Services in little memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLink {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.clusterIP` exactly as stored (`""`, `"None"` or an IP).
    pub cluster_ip: String,
    /// `spec.ports`, in order: the first one is special-cased by the kubelet.
    pub ports: Vec<LinkPort>,
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPort {
    /// `name`; empty when unnamed (only the first port may be, per API validation).
    pub name: String,
    /// `port`.
    pub port: i32,
    /// `protocol` as stored; empty means TCP, as in the kubelet.
    pub protocol: String,
}

impl ServiceLink {
    /// `v1helper.IsServiceIPSet`: the cluster IP is neither empty nor `None`.
    ///
    /// Headless Services (`None`) and ExternalName Services (no cluster IP) give no variables.
    /// The kubelet looks only at the IP, not at `spec.type`, and so does envlink.
    pub fn has_cluster_ip(&self) -> bool {
        !self.cluster_ip.is_empty() && self.cluster_ip != "None"
    }

    /// True when the Service yields variables at all: a cluster IP and at least one port.
    ///
    /// API validation guarantees a port whenever a cluster IP is set (the kubelet indexes
    /// `Ports[0]` unchecked); a hand-written catalog may not, so such a Service gives nothing
    /// instead of a crash.
    pub fn yields_variables(&self) -> bool {
        self.has_cluster_ip() && !self.ports.is_empty()
    }
}

/// RFC 1123 label: what Service and namespace names are (lower-case alphanumerics and `-`,
/// alphanumeric at both ends, at most 63 characters).
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// One environment variable, name and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvVar {
    /// The variable name.
    pub name: String,
    /// Its value.
    pub value: String,
}

impl EnvVar {
    fn new(name: String, value: String) -> Self {
        Self { name, value }
    }
}

/// `makeEnvVariableName`: upper-case and `-` → `_`.
///
/// Go's `strings.ToUpper` maps rune by rune with the simple case mapping (a rune never
/// becomes two), unlike Rust's `to_uppercase` (`ß` → `SS`); the per-char fallback keeps the
/// two equal for any input, not only for the ASCII that API validation allows.
pub fn env_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '-' {
            out.push('_');
            continue;
        }
        push_simple_case(&mut out, c, char::to_uppercase);
    }
    out
}

/// Go's `strings.ToLower`, rune by rune (see [`env_name`]).
fn go_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_simple_case(&mut out, c, char::to_lowercase);
    }
    out
}

/// Go's `strings.ToUpper`, rune by rune (see [`env_name`]).
fn go_upper(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_simple_case(&mut out, c, char::to_uppercase);
    }
    out
}

fn push_simple_case<I: Iterator<Item = char>>(out: &mut String, c: char, map: impl Fn(char) -> I) {
    if c.is_ascii() {
        out.push(if c.is_ascii_alphabetic() {
            // `map` of an ASCII letter is one ASCII letter.
            map(c).next().unwrap_or(c)
        } else {
            c
        });
        return;
    }
    let mut mapped = map(c);
    match (mapped.next(), mapped.next()) {
        (Some(single), None) => out.push(single),
        _ => out.push(c),
    }
}

/// Go's `net.JoinHostPort`: a host containing a colon (IPv6) goes in brackets.
pub fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The variables of one Service, in the kubelet's order (`FromServices` for one Service).
///
/// Returns nothing for a Service without a cluster IP or without ports.
pub fn service_variables(service: &ServiceLink) -> Vec<EnvVar> {
    let mut out = Vec::new();
    append_service_variables(service, &mut out);
    out
}

/// Appends the variables of one Service to `out` (see [`service_variables`]).
fn append_service_variables(service: &ServiceLink, out: &mut Vec<EnvVar>) {
    if !service.yields_variables() {
        return;
    }
    let prefix = env_name(&service.name);
    let ip = &service.cluster_ip;
    out.push(EnvVar::new(format!("{prefix}_SERVICE_HOST"), ip.clone()));
    let service_port = format!("{prefix}_SERVICE_PORT");
    out.push(EnvVar::new(
        service_port.clone(),
        service.ports[0].port.to_string(),
    ));
    for port in &service.ports {
        if !port.name.is_empty() {
            out.push(EnvVar::new(
                format!("{service_port}_{}", env_name(&port.name)),
                port.port.to_string(),
            ));
        }
    }
    for (i, port) in service.ports.iter().enumerate() {
        let protocol = if port.protocol.is_empty() {
            "TCP"
        } else {
            port.protocol.as_str()
        };
        let proto_lower = go_lower(protocol);
        let url = format!("{proto_lower}://{}", join_host_port(ip, port.port));
        if i == 0 {
            out.push(EnvVar::new(format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, go_upper(protocol));
        out.push(EnvVar::new(port_prefix.clone(), url));
        out.push(EnvVar::new(format!("{port_prefix}_PROTO"), proto_lower));
        out.push(EnvVar::new(
            format!("{port_prefix}_PORT"),
            port.port.to_string(),
        ));
        out.push(EnvVar::new(format!("{port_prefix}_ADDR"), ip.clone()));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Service from (port name, port, protocol) triples (shared with other modules' tests).
    pub(crate) fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, i32, &str)]) -> ServiceLink {
        ServiceLink {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.into(),
            ports: ports
                .iter()
                .map(|(n, p, proto)| LinkPort {
                    name: (*n).into(),
                    port: *p,
                    protocol: (*proto).into(),
                })
                .collect(),
        }
    }

    fn pairs(vars: &[EnvVar]) -> Vec<(&str, &str)> {
        vars.iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect()
    }

    #[test]
    fn redis_master_example_from_the_kubernetes_docs() {
        let s = svc("ns", "redis-master", "10.0.0.11", &[("", 6379, "TCP")]);
        assert_eq!(
            pairs(&service_variables(&s)),
            vec![
                ("REDIS_MASTER_SERVICE_HOST", "10.0.0.11"),
                ("REDIS_MASTER_SERVICE_PORT", "6379"),
                ("REDIS_MASTER_PORT", "tcp://10.0.0.11:6379"),
                ("REDIS_MASTER_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
                ("REDIS_MASTER_PORT_6379_TCP_PROTO", "tcp"),
                ("REDIS_MASTER_PORT_6379_TCP_PORT", "6379"),
                ("REDIS_MASTER_PORT_6379_TCP_ADDR", "10.0.0.11"),
            ]
        );
    }

    #[test]
    fn table_of_port_shapes() {
        struct Case {
            what: &'static str,
            service: ServiceLink,
            want: Vec<(&'static str, &'static str)>,
        }
        let cases = vec![
            Case {
                what: "named ports with dashes, UDP second, empty protocol is TCP",
                service: svc(
                    "ns",
                    "my-dns",
                    "10.96.0.10",
                    &[("dns-tcp", 53, ""), ("dns", 53, "UDP")],
                ),
                want: vec![
                    ("MY_DNS_SERVICE_HOST", "10.96.0.10"),
                    ("MY_DNS_SERVICE_PORT", "53"),
                    ("MY_DNS_SERVICE_PORT_DNS_TCP", "53"),
                    ("MY_DNS_SERVICE_PORT_DNS", "53"),
                    ("MY_DNS_PORT", "tcp://10.96.0.10:53"),
                    ("MY_DNS_PORT_53_TCP", "tcp://10.96.0.10:53"),
                    ("MY_DNS_PORT_53_TCP_PROTO", "tcp"),
                    ("MY_DNS_PORT_53_TCP_PORT", "53"),
                    ("MY_DNS_PORT_53_TCP_ADDR", "10.96.0.10"),
                    ("MY_DNS_PORT_53_UDP", "udp://10.96.0.10:53"),
                    ("MY_DNS_PORT_53_UDP_PROTO", "udp"),
                    ("MY_DNS_PORT_53_UDP_PORT", "53"),
                    ("MY_DNS_PORT_53_UDP_ADDR", "10.96.0.10"),
                ],
            },
            Case {
                what: "IPv6: brackets only inside URLs",
                service: svc("ns", "v6", "fd00::1", &[("", 80, "SCTP")]),
                want: vec![
                    ("V6_SERVICE_HOST", "fd00::1"),
                    ("V6_SERVICE_PORT", "80"),
                    ("V6_PORT", "sctp://[fd00::1]:80"),
                    ("V6_PORT_80_SCTP", "sctp://[fd00::1]:80"),
                    ("V6_PORT_80_SCTP_PROTO", "sctp"),
                    ("V6_PORT_80_SCTP_PORT", "80"),
                    ("V6_PORT_80_SCTP_ADDR", "fd00::1"),
                ],
            },
            Case {
                what: "headless gives nothing",
                service: svc("ns", "h", "None", &[("", 80, "TCP")]),
                want: vec![],
            },
            Case {
                what: "ExternalName (no cluster IP) gives nothing",
                service: svc("ns", "ext", "", &[]),
                want: vec![],
            },
            Case {
                what: "cluster IP without ports gives nothing (no panic)",
                service: svc("ns", "odd", "10.0.0.1", &[]),
                want: vec![],
            },
        ];
        for case in cases {
            assert_eq!(
                pairs(&service_variables(&case.service)),
                case.want,
                "{}",
                case.what
            );
        }
    }

    #[test]
    fn go_case_mapping_is_rune_by_rune() {
        assert_eq!(env_name("straße-a"), "STRAßE_A");
        assert_eq!(env_name("abc-def-9"), "ABC_DEF_9");
        assert_eq!(go_lower("SCTP"), "sctp");
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "redis-master", "db1", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn join_host_port_matches_go() {
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(join_host_port("fe80::1%eth0", 8080), "[fe80::1%eth0]:8080");
    }
}
