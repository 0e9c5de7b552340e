//! envlink: an admission webhook that writes the kubelet's service-link variables into Pods
//! and guards the variables that device plugins set.
//!
//! Layers, one direction: `servicelinks` and `reserved` are pure rules; `catalog` holds the
//! Services; `admission` decides (pure); `cli` and `http` are the edges.

pub mod admission;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod http;
pub mod manifest;
pub mod reserved;
pub mod servicelinks;
pub mod telemetry;
