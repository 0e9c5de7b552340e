//! envlink: an admission webhook that writes the kubelet's service-link variables into Pods
//! and guards the variables that device plugins set.
//!
//! Layers, bottom to top; a module imports only from layers below it:
//!
//! 1. `text`, `servicelinks`, `manifest`, `podshape`: leaf helpers and the kubelet's rules;
//! 2. `reserved`: the reserved-variable rules engine (pure);
//! 3. `packs`: the built-in rules, as data in `reserved`'s types;
//! 4. `config`: the policy file, which builds the rules from itself and the packs;
//! 5. `catalog`: the Services (and ConfigMap keys, claims), each Service judged against the
//!    rules once, when it arrives;
//! 6. `admission`: the decision, pure, on one catalog snapshot per review;
//! 7. `listing`, then `audit` and `policy`: existing objects and the native policy;
//! 8. `http`, then `cli`: the edges (`telemetry`, in layer 1, serves both).
//!
//! `tests/structure.rs` enforces the order; ARCHITECTURE.md maps the state and the paths.

pub mod admission;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod http;
pub mod listing;
pub mod manifest;
pub mod packs;
pub mod podshape;
pub mod policy;
pub mod reserved;
pub mod servicelinks;
pub mod telemetry;
pub mod text;
