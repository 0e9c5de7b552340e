//! Reading Kubernetes manifests: JSON, or YAML with one or many documents.

/// Why a manifest could not be read. (Underlying errors are part of the message, not
/// `#[source]`s, so an `anyhow` chain prints them once.)
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {origin}: {error}")]
    Read {
        /// The file (or `standard input`).
        origin: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Not valid JSON.
    #[error("{origin} is not valid JSON: {error}")]
    Json {
        /// The file.
        origin: String,
        /// The parser's error, with line and column.
        error: serde_json::Error,
    },
    /// Not valid YAML.
    #[error("{origin} is not valid YAML: {message}")]
    Yaml {
        /// The file.
        origin: String,
        /// The parser's message, with the line.
        message: String,
    },
}

/// Reads a file, or standard input for `-`.
pub fn read_input(path: &str) -> Result<(String, String), ManifestError> {
    if path == "-" {
        let origin = String::from("standard input");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|error| {
            ManifestError::Read {
                origin: origin.clone(),
                error,
            }
        })?;
        Ok((text, origin))
    } else {
        let text = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
            origin: path.to_string(),
            error,
        })?;
        Ok((text, path.to_string()))
    }
}

/// The text without leading whitespace and byte-order mark when it is JSON (starts with `{`
/// or `[`); `None` when it is YAML.
pub fn json_text(text: &str) -> Option<&str> {
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    (trimmed.starts_with('{') || trimmed.starts_with('[')).then_some(trimmed)
}

/// Parses every document of a manifest. JSON when the text starts with `{` or `[` (the JSON
/// parser's messages are sharper), YAML otherwise; empty YAML documents are dropped.
pub fn parse_documents(text: &str, origin: &str) -> Result<Vec<serde_json::Value>, ManifestError> {
    if let Some(json) = json_text(text) {
        let value = serde_json::from_str(json).map_err(|error| ManifestError::Json {
            origin: origin.to_string(),
            error,
        })?;
        return Ok(vec![value]);
    }
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_multi_document_and_json() {
        let docs = parse_documents("---\na: 1\n---\n---\nb: x\n", "t").expect("yaml");
        assert_eq!(
            docs,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"b": "x"})]
        );
        let docs = parse_documents(" {\"a\": [1]}", "t").expect("json");
        assert_eq!(docs, vec![serde_json::json!({"a": [1]})]);
        let err = parse_documents("{\"a\": ", "in.json")
            .expect_err("bad json")
            .to_string();
        assert!(err.contains("in.json") && err.contains("JSON"), "{err}");
        let err = parse_documents("a: [1\n", "in.yaml")
            .expect_err("bad yaml")
            .to_string();
        assert!(err.contains("in.yaml") && err.contains("YAML"), "{err}");
    }

    #[test]
    fn yaml_keeps_none_and_numbers_apart() {
        let docs = parse_documents("clusterIP: None\nport: 80\nip: 10.0.0.1\n", "t").expect("yaml");
        assert_eq!(
            docs[0],
            serde_json::json!({"clusterIP": "None", "port": 80, "ip": "10.0.0.1"})
        );
    }
}
