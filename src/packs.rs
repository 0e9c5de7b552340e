//! The built-in rule packs: one per device stack, every name with where it comes from.
//!
//! A name is here because the stack's own source *sets* it (a device plugin's `Allocate` env)
//! or *reads* it from the container's env (a runtime hook, an isolation library, the plugin
//! reading the Pod spec). Each entry carries the repository and path it was read in, so the
//! README table ([`markdown_table`]) is generated from this file and a test keeps the two in
//! sync. A name whose status could not be confirmed from source says so (`confirmed: false`).

use crate::reserved::{Action, RuleConfig, Scope};

/// Whether the stack sets a name or reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// The device plugin puts it in its `Allocate` response (the kubelet puts it before the
    /// container's own env, so a user's value wins).
    Sets,
    /// A runtime hook, library or the plugin itself reads it from the container's env: a
    /// user's value changes what the stack does.
    Reads,
}

impl Provenance {
    /// As the README writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Sets => "sets",
            Provenance::Reads => "reads",
        }
    }
}

/// How an entry matches names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// The exact name.
    Name,
    /// Every name that begins with it.
    Prefix,
    /// Whole-name regular expression.
    Pattern,
}

/// One reserved name (or prefix, or pattern) with its source.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The name, prefix or pattern.
    pub text: &'static str,
    /// How `text` matches.
    pub matcher: Matcher,
    /// Set or read.
    pub provenance: Provenance,
    /// The repository it was read in (`owner/name`).
    pub repo: &'static str,
    /// The file in that repository.
    pub path: &'static str,
    /// Whether the source was read and says so; `false`: listed on the strength of the
    /// vendor's documentation only (the README marks it).
    pub confirmed: bool,
    /// A remark for the README (a mode, a version), or empty.
    pub note: &'static str,
}

/// One rule of a pack.
#[derive(Debug, Clone, Copy)]
pub struct PackRule {
    /// The rule's name in messages (`rule nvidia`).
    pub name: &'static str,
    /// Resource globs (device plugins).
    pub resources: &'static [&'static str],
    /// DRA device-class globs.
    pub device_classes: &'static [&'static str],
    /// Which containers.
    pub scope: Scope,
    /// Why this scope, for the README.
    pub why: &'static str,
    /// What it reserves.
    pub entries: &'static [Entry],
}

/// One device stack's rules.
#[derive(Debug, Clone, Copy)]
pub struct Pack {
    /// The name used in `reserved.disableDefaultRules` and `reserved.packActions`.
    pub name: &'static str,
    /// Its rules.
    pub rules: &'static [PackRule],
}

const fn sets(text: &'static str, repo: &'static str, path: &'static str) -> Entry {
    Entry {
        text,
        matcher: Matcher::Name,
        provenance: Provenance::Sets,
        repo,
        path,
        confirmed: true,
        note: "",
    }
}

const fn reads(text: &'static str, repo: &'static str, path: &'static str) -> Entry {
    Entry {
        provenance: Provenance::Reads,
        ..sets(text, repo, path)
    }
}

const fn note(entry: Entry, note: &'static str) -> Entry {
    Entry { note, ..entry }
}

const fn unconfirmed(entry: Entry) -> Entry {
    Entry {
        confirmed: false,
        ..entry
    }
}

const fn prefix(entry: Entry) -> Entry {
    Entry {
        matcher: Matcher::Prefix,
        ..entry
    }
}

const fn pattern(entry: Entry) -> Entry {
    Entry {
        matcher: Matcher::Pattern,
        ..entry
    }
}

const NVIDIA: &str = "NVIDIA/k8s-device-plugin";
const NVIDIA_SERVER: &str = "internal/plugin/server.go";
const NVIDIA_TOOLKIT: &str = "NVIDIA/nvidia-container-toolkit";
const HAMI: &str = "Project-HAMi/HAMi";
const HAMI_SERVER: &str = "pkg/device-plugin/nvidiadevice/nvinternal/plugin/server.go";
const HABANA: &str = "HabanaAI/habanalabs-k8s-device-plugin";
const ASCEND: &str = "Ascend/ascend-device-plugin";
const ASCEND_HOOK: &str = "Ascend/ascend-docker-runtime";
const NEURON: &str = "aws-neuron/aws-neuron-sdk";
const INTEL: &str = "intel/intel-device-plugins-for-kubernetes";
const CAMBRICON: &str = "Cambricon/cambricon-k8s-device-plugin";
const SRIOV: &str = "k8snetworkplumbingwg/sriov-network-device-plugin";

/// The built-in packs, in the order their rules are checked.
pub const PACKS: &[Pack] = &[
    Pack {
        name: "nvidia",
        rules: &[
            PackRule {
                name: "nvidia",
                resources: &["nvidia.com/*"],
                device_classes: &["*.nvidia.com"],
                scope: Scope::Requesting,
                why: "",
                entries: &[
                    sets("NVIDIA_VISIBLE_DEVICES", NVIDIA, NVIDIA_SERVER),
                    note(
                        sets("NVIDIA_IMEX_CHANNELS", NVIDIA, NVIDIA_SERVER),
                        "when IMEX channels are configured",
                    ),
                    note(
                        // Seen set in a fork of the plugin and as a toolkit feature flag, not in upstream
                        // server.go's Allocate: cited, but unconfirmed.
                        unconfirmed(sets("NVIDIA_GDRCOPY", NVIDIA, NVIDIA_SERVER)),
                        "with GDRCopy enabled",
                    ),
                    note(
                        sets("NVIDIA_GDS", NVIDIA, NVIDIA_SERVER),
                        "with GDS enabled",
                    ),
                    note(
                        sets("NVIDIA_MOFED", NVIDIA, NVIDIA_SERVER),
                        "with MOFED enabled",
                    ),
                    note(
                        sets("CUDA_MPS_PIPE_DIRECTORY", NVIDIA, NVIDIA_SERVER),
                        "MPS sharing",
                    ),
                    note(
                        sets("CUDA_MPS_LOG_DIRECTORY", NVIDIA, NVIDIA_SERVER),
                        "MPS sharing, v0.15 (later versions set only the pipe directory)",
                    ),
                ],
            },
            PackRule {
                name: "nvidia-visible-devices",
                resources: &["nvidia.com/*"],
                device_classes: &[],
                scope: Scope::All,
                why: "the NVIDIA container runtime hook honours `NVIDIA_VISIBLE_DEVICES=all` in \
                      any container, GPU or not, and mounts every GPU of the node",
                entries: &[reads(
                    "NVIDIA_VISIBLE_DEVICES",
                    NVIDIA_TOOLKIT,
                    "internal/config/image/cuda_image.go",
                )],
            },
        ],
    },
    Pack {
        name: "hami",
        rules: &[PackRule {
            name: "hami",
            resources: &["nvidia.com/*"],
            device_classes: &[],
            scope: Scope::Requesting,
            why: "",
            entries: &[
                pattern(sets("CUDA_DEVICE_MEMORY_LIMIT_[0-9]+", HAMI, HAMI_SERVER)),
                sets("CUDA_DEVICE_SM_LIMIT", HAMI, HAMI_SERVER),
                sets("CUDA_DEVICE_MEMORY_SHARED_CACHE", HAMI, HAMI_SERVER),
                note(
                    sets("CUDA_OVERSUBSCRIBE", HAMI, HAMI_SERVER),
                    "with device memory scaling above 1",
                ),
                note(
                    reads("CUDA_DISABLE_CONTROL", HAMI, HAMI_SERVER),
                    "read from the Pod spec in `Allocate`: set, it skips the HAMi-core \
                     preload and with it all memory and compute isolation",
                ),
            ],
        }],
    },
    Pack {
        name: "habana",
        rules: &[PackRule {
            name: "habana",
            resources: &["habana.ai/*"],
            device_classes: &[],
            scope: Scope::Requesting,
            why: "",
            entries: &[
                sets("HABANA_VISIBLE_DEVICES", HABANA, "habanalabs.go"),
                sets("HL_VISIBLE_DEVICES", HABANA, "habanalabs.go"),
                sets("HL_VISIBLE_DEVICES_UUID", HABANA, "habanalabs.go"),
                note(
                    sets("HABANA_VISIBLE_MODULES", HABANA, "habanalabs.go"),
                    "when fewer than all devices are allocated",
                ),
            ],
        }],
    },
    Pack {
        name: "ascend",
        rules: &[
            PackRule {
                name: "ascend",
                resources: &["huawei.com/Ascend*"],
                device_classes: &[],
                scope: Scope::Requesting,
                why: "",
                entries: &[
                    sets("ASCEND_VISIBLE_DEVICES", ASCEND, "pkg/common/constants.go"),
                    sets("ASCEND_RUNTIME_OPTIONS", ASCEND, "pkg/common/constants.go"),
                    sets("ASCEND_ALLOW_LINK", ASCEND, "pkg/common/constants.go"),
                    reads("ASCEND_RUNTIME_MOUNTS", ASCEND_HOOK, "hook/main.go"),
                ],
            },
            PackRule {
                name: "ascend-visible-devices",
                resources: &["huawei.com/Ascend*"],
                device_classes: &[],
                scope: Scope::All,
                why: "the Ascend Docker Runtime hook mounts the NPUs named in \
                      `ASCEND_VISIBLE_DEVICES` in any container that sets it",
                entries: &[reads("ASCEND_VISIBLE_DEVICES", ASCEND_HOOK, "hook/main.go")],
            },
        ],
    },
    Pack {
        name: "neuron",
        rules: &[
            PackRule {
                name: "neuron",
                resources: &["aws.amazon.com/neuron*"],
                device_classes: &[],
                scope: Scope::Requesting,
                why: "",
                entries: &[
                    note(
                        sets(
                            "AWS_NEURON_VISIBLE_DEVICES",
                            NEURON,
                            "containers/tutorials/k8s-neuron-scheduler.rst",
                        ),
                        "the plugin's source is not public; its documentation shows the env",
                    ),
                    note(
                        unconfirmed(sets(
                            "NEURON_RT_VISIBLE_CORES",
                            NEURON,
                            "containers/tutorials/k8s-neuron-scheduler.rst",
                        )),
                        "for `aws.amazon.com/neuroncore`; not confirmed from source",
                    ),
                ],
            },
            PackRule {
                name: "neuron-visible-devices",
                resources: &["aws.amazon.com/neuron*"],
                device_classes: &[],
                scope: Scope::All,
                why: "the Neuron OCI hook honours `AWS_NEURON_VISIBLE_DEVICES` in any container",
                entries: &[reads(
                    "AWS_NEURON_VISIBLE_DEVICES",
                    NEURON,
                    "containers/tutorials/tutorial-oci-hook.rst",
                )],
            },
        ],
    },
    Pack {
        name: "intel-fpga",
        rules: &[PackRule {
            name: "intel-fpga",
            resources: &["fpga.intel.com/*"],
            device_classes: &[],
            scope: Scope::Requesting,
            why: "",
            entries: &[
                pattern(reads(
                    "FPGA_REGION_[0-9]+",
                    INTEL,
                    "cmd/fpga_crihook/main.go",
                )),
                pattern(reads("FPGA_AFU_[0-9]+", INTEL, "cmd/fpga_crihook/main.go")),
            ],
        }],
    },
    Pack {
        name: "intel-qat",
        rules: &[PackRule {
            name: "intel-qat",
            resources: &["qat.intel.com/*"],
            device_classes: &[],
            scope: Scope::Requesting,
            why: "",
            entries: &[pattern(sets(
                "QAT[0-9]+",
                INTEL,
                "cmd/qat_plugin/dpdkdrv/dpdkdrv.go",
            ))],
        }],
    },
    Pack {
        name: "cambricon",
        rules: &[PackRule {
            name: "cambricon",
            resources: &["cambricon.com/*"],
            device_classes: &[],
            scope: Scope::Requesting,
            why: "",
            entries: &[
                sets(
                    "CAMBRICON_VISIBLE_DEVICES",
                    CAMBRICON,
                    "device-plugin/pkg/mlu/const.go",
                ),
                note(
                    sets(
                        "VIRTUAL_DEVICES",
                        CAMBRICON,
                        "device-plugin/pkg/mlu/const.go",
                    ),
                    "env-share mode",
                ),
            ],
        }],
    },
    Pack {
        name: "sriov",
        rules: &[PackRule {
            name: "sriov",
            resources: &[],
            device_classes: &[],
            scope: Scope::All,
            why: "SR-IOV resource names are chosen per cluster, so no glob finds them",
            entries: &[prefix(sets("PCIDEVICE_", SRIOV, "pkg/resources/server.go"))],
        }],
    },
];

/// Finds a pack by name.
pub fn pack(name: &str) -> Option<&'static Pack> {
    PACKS.iter().find(|p| p.name == name)
}

/// The names of the built-in packs, for messages.
pub fn pack_names() -> Vec<&'static str> {
    PACKS.iter().map(|p| p.name).collect()
}

impl PackRule {
    /// This rule as configuration, with the given action.
    pub fn to_config(&self, action: Action) -> RuleConfig {
        let list = |m: Matcher| {
            self.entries
                .iter()
                .filter(|e| e.matcher == m)
                .map(|e| e.text.to_string())
                .collect::<Vec<_>>()
        };
        RuleConfig {
            name: self.name.to_string(),
            resources: self.resources.iter().map(|s| s.to_string()).collect(),
            device_classes: self.device_classes.iter().map(|s| s.to_string()).collect(),
            names: list(Matcher::Name),
            prefixes: list(Matcher::Prefix),
            patterns: list(Matcher::Pattern),
            scope: self.scope,
            action,
            device_class_action: None,
        }
    }
}

/// The README's table of the built-in packs: pack, resources (and DRA device classes), each
/// name with sets/reads and its source, scope.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| pack | rule | resources | name | sets / reads | source (repository: path) | scope |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for pack in PACKS {
        for rule in pack.rules {
            let mut resources = if rule.resources.is_empty() {
                String::from("—")
            } else {
                rule.resources
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if !rule.device_classes.is_empty() {
                resources.push_str(&format!(
                    "; DRA classes {}",
                    rule.device_classes
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let scope = match rule.scope {
                Scope::Requesting => String::from("requesting"),
                Scope::All => format!("**every** container: {}", rule.why),
            };
            for entry in rule.entries {
                let name = match entry.matcher {
                    Matcher::Name => format!("`{}`", entry.text),
                    Matcher::Prefix => format!("prefix `{}`", entry.text),
                    Matcher::Pattern => format!("pattern `{}`", entry.text),
                };
                let mut how = entry.provenance.as_str().to_string();
                if !entry.confirmed {
                    how.push_str(" (**unconfirmed**)");
                }
                if !entry.note.is_empty() {
                    how.push_str(&format!(" — {}", entry.note));
                }
                out.push_str(&format!(
                    "| `{}` | `{}` | {resources} | {name} | {how} | `{}`: `{}` | {scope} |\n",
                    pack.name, rule.name, entry.repo, entry.path,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_rule_names_are_unique_and_every_rule_has_entries() {
        let mut packs: Vec<_> = PACKS.iter().map(|p| p.name).collect();
        packs.sort_unstable();
        packs.dedup();
        assert_eq!(packs.len(), PACKS.len());
        let mut rules: Vec<_> = PACKS
            .iter()
            .flat_map(|p| p.rules.iter().map(|r| r.name))
            .collect();
        let total = rules.len();
        rules.sort_unstable();
        rules.dedup();
        assert_eq!(rules.len(), total);
        assert!(
            PACKS
                .iter()
                .all(|p| p.rules.iter().all(|r| !r.entries.is_empty()))
        );
    }

    #[test]
    fn the_mps_limits_are_not_reserved() {
        // Applied by the MPS control daemon through its control pipe, not by `Allocate`.
        for pack in PACKS {
            for rule in pack.rules {
                for e in rule.entries {
                    assert!(
                        !e.text.starts_with("CUDA_MPS_ACTIVE")
                            && !e.text.starts_with("CUDA_MPS_PINNED"),
                        "{}",
                        e.text
                    );
                }
            }
        }
    }

    #[test]
    fn readme_lists_every_pack_as_generated() {
        let readme = include_str!("../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's pack table is out of date; replace it with:\n{table}"
        );
    }
}
