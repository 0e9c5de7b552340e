//! Service catalog from a kube-runtime watcher (see the server issue).
