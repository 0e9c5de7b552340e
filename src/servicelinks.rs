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

/// What one Service's variables are made of, with every case mapping and number already
/// formatted: a few dozen bytes from which [`render_variables`] writes the ~500 bytes of
/// variables. The catalog stores this form (100,000 Services in a tenth of the memory) and
/// renders a Service's variables when a review injects them.
#[derive(Debug, Clone, Copy)]
pub struct Recipe<'a> {
    /// [`env_name`] of the Service's name.
    pub prefix: &'a str,
    /// `spec.clusterIP`, set (see [`ServiceLink::has_cluster_ip`]).
    pub cluster_ip: &'a str,
    /// The ports, in order; none: the Service gives no variables.
    pub ports: &'a [PortRecipe<'a>],
}

/// One port of a [`Recipe`]: the pieces its variables share, composed once.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortRecipe<'a> {
    /// [`env_name`] of the port's name; empty when unnamed.
    pub env_name: &'a str,
    /// The port number in decimal.
    pub number: &'a str,
    /// The protocol (`TCP` when empty), Go-lower-cased (`tcp`).
    pub proto_lower: &'a str,
    /// `PREFIX_PORT_<number>_<PROTOCOL>`, the head of the port's own four variables.
    pub block: &'a str,
    /// `<protocol>://<host>:<number>` (`net.JoinHostPort`: an IPv6 host in brackets).
    pub url: &'a str,
}

/// The owned pieces of one port's [`PortRecipe`], made from the Service's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortParts {
    /// See [`PortRecipe::env_name`].
    pub env_name: String,
    /// See [`PortRecipe::number`].
    pub number: String,
    /// See [`PortRecipe::proto_lower`].
    pub proto_lower: String,
    /// See [`PortRecipe::block`].
    pub block: String,
    /// See [`PortRecipe::url`].
    pub url: String,
}

impl PortParts {
    /// The pieces of `port` of a Service whose [`env_name`] is `prefix`.
    pub fn of(prefix: &str, cluster_ip: &str, port: &LinkPort) -> Self {
        // The kubelet reads an empty protocol as TCP.
        let protocol = if port.protocol.is_empty() {
            "TCP"
        } else {
            port.protocol.as_str()
        };
        let number = port.port.to_string();
        let proto_lower = go_lower(protocol);
        Self {
            env_name: env_name(&port.name),
            block: format!("{prefix}_PORT_{number}_{}", go_upper(protocol)),
            url: format!("{proto_lower}://{}", join_host_port(cluster_ip, port.port)),
            number,
            proto_lower,
        }
    }

    /// The pieces, borrowed.
    pub fn recipe(&self) -> PortRecipe<'_> {
        PortRecipe {
            env_name: &self.env_name,
            number: &self.number,
            proto_lower: &self.proto_lower,
            block: &self.block,
            url: &self.url,
        }
    }
}

/// Receives the variables [`render_variables`] writes, as pieces: a name's pieces, then
/// [`VariableSink::end_name`], the value's pieces, then [`VariableSink::end_value`].
pub trait VariableSink {
    /// A piece of the current name or value.
    fn push(&mut self, piece: &str);
    /// The name is complete.
    fn end_name(&mut self);
    /// The value is complete (and so is the variable).
    fn end_value(&mut self);
}

/// Writes a Service's variables in the kubelet's order (`FromServices` for one Service);
/// nothing when it has no ports. The caller checks the cluster IP (a [`Recipe`] has one).
pub fn render_variables(recipe: &Recipe<'_>, sink: &mut impl VariableSink) {
    let Some(first) = recipe.ports.first() else {
        return;
    };
    let (prefix, ip) = (recipe.prefix, recipe.cluster_ip);
    // A name is its pieces then a suffix: the per-port names share one block of pieces.
    let mut variable = |name: &[&str], suffix: &str, value: &[&str]| {
        name.iter().for_each(|piece| sink.push(piece));
        sink.push(suffix);
        sink.end_name();
        value.iter().for_each(|piece| sink.push(piece));
        sink.end_value();
    };
    variable(&[prefix], "_SERVICE_HOST", &[ip]);
    variable(&[prefix], "_SERVICE_PORT", &[first.number]);
    for port in recipe.ports {
        if !port.env_name.is_empty() {
            variable(&[prefix, "_SERVICE_PORT_"], port.env_name, &[port.number]);
        }
    }
    for (i, port) in recipe.ports.iter().enumerate() {
        if i == 0 {
            variable(&[prefix], "_PORT", &[port.url]);
        }
        variable(&[port.block], "", &[port.url]);
        variable(&[port.block], "_PROTO", &[port.proto_lower]);
        variable(&[port.block], "_PORT", &[port.number]);
        variable(&[port.block], "_ADDR", &[ip]);
    }
}

/// The variables of one Service, in the kubelet's order (`FromServices` for one Service).
///
/// Returns nothing for a Service without a cluster IP or without ports.
pub fn service_variables(service: &ServiceLink) -> Vec<EnvVar> {
    if !service.yields_variables() {
        return Vec::new();
    }
    let prefix = env_name(&service.name);
    let ports: Vec<PortParts> = service
        .ports
        .iter()
        .map(|port| PortParts::of(&prefix, &service.cluster_ip, port))
        .collect();
    let ports: Vec<PortRecipe<'_>> = ports.iter().map(PortParts::recipe).collect();
    let recipe = Recipe {
        prefix: &prefix,
        cluster_ip: &service.cluster_ip,
        ports: &ports,
    };
    let mut sink = EnvVarSink::default();
    render_variables(&recipe, &mut sink);
    sink.vars
}

/// Collects rendered variables as [`EnvVar`]s.
#[derive(Default)]
struct EnvVarSink {
    vars: Vec<EnvVar>,
    name: String,
    value: String,
    in_value: bool,
}

impl VariableSink for EnvVarSink {
    fn push(&mut self, piece: &str) {
        if self.in_value {
            self.value.push_str(piece);
        } else {
            self.name.push_str(piece);
        }
    }

    fn end_name(&mut self) {
        self.in_value = true;
    }

    fn end_value(&mut self) {
        self.in_value = false;
        let name = std::mem::take(&mut self.name);
        let value = std::mem::take(&mut self.value);
        self.vars.push(EnvVar::new(name, value));
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
