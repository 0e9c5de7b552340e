#!/usr/bin/env bash
# Regenerates what the chart embeds for the native ValidatingAdmissionPolicy:
#   charts/envlink/files/native-policy.yaml         `envlink policy --no-binding` for the
#                                                    built-in configuration
#   charts/envlink/files/native-policy-config.json  the chart's default `config.reserved` as
#                                                    Helm's toJson writes it: the chart installs
#                                                    the embedded policy only while the values
#                                                    still say exactly this
# `cargo test --test native_policy` fails while either is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVLINK_REGENERATE=1 cargo test -q --test native_policy -- the_chart_embeds >/dev/null
echo "regenerated charts/envlink/files/native-policy.yaml and native-policy-config.json"
