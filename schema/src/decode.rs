//! Decoding user documents (multi-document YAML or JSON) into validated objects.
//!
//! Every document is parsed and validated before anything is written; an error names the
//! document by its position and, where it can, the field.

use crate::field::FieldErrors;
use crate::object::AnyObject;
use serde::Deserialize;
use std::fmt;

/// The largest single object tend stores, as encoded JSON. Kubernetes caps objects near 1.5 MB;
/// tend objects are small specs, so 1 MiB is generous and keeps a runaway file from the store.
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// The largest input `decode_all` reads.
pub const MAX_INPUT_BYTES: usize = 64 << 20;

/// The most documents one input may hold.
pub const MAX_DOCUMENTS: usize = 100_000;

/// Why one document could not be used.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Not YAML/JSON at all.
    Syntax(String),
    /// Parsed, but wrong shape or invalid values.
    Invalid(FieldErrors),
    /// Too big to store.
    TooLarge(usize),
    /// The same object (kind, namespace, name) was already declared by an earlier document.
    Duplicate { object: String, first: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Syntax(m) => write!(f, "not valid YAML or JSON: {m}"),
            DecodeError::Invalid(e) => write!(f, "{e}"),
            DecodeError::TooLarge(n) => write!(
                f,
                "object is {n} bytes, larger than the {} byte limit",
                MAX_OBJECT_BYTES
            ),
            DecodeError::Duplicate { object, first } => write!(
                f,
                "{object} is also declared by document {first}: an input may declare an object once"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// One document of an input: its 1-based position and what it decoded to.
#[derive(Debug)]
pub struct Document {
    pub index: usize,
    pub result: Result<AnyObject, DecodeError>,
}

/// Splits an input into documents and decodes each. Empty documents (`---` alone) are skipped
/// but still counted, so positions match what an editor shows. An error in the YAML stream
/// itself ends the input with one error document.
pub fn decode_all(input: &str) -> Result<Vec<Document>, DecodeError> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(DecodeError::Syntax(format!(
            "input is {} bytes, larger than the {MAX_INPUT_BYTES} byte limit",
            input.len()
        )));
    }
    let mut docs = Vec::new();
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // JSON: one object, a JSON array of objects, or a Kubernetes List.
        let value: serde_json::Value =
            serde_json::from_str(input).map_err(|e| DecodeError::Syntax(e.to_string()))?;
        for (i, v) in flatten_lists(value).into_iter().enumerate() {
            docs.push(Document {
                index: i + 1,
                result: decode_value(v),
            });
        }
        refuse_duplicates(&mut docs);
        return Ok(docs);
    }
    for (i, de) in serde_yaml_ng::Deserializer::from_str(input).enumerate() {
        if i >= MAX_DOCUMENTS {
            return Err(DecodeError::Syntax(format!(
                "more than {MAX_DOCUMENTS} documents"
            )));
        }
        match serde_json::Value::deserialize(de) {
            Ok(serde_json::Value::Null) => continue,
            Ok(v) => {
                for v in flatten_lists(v) {
                    docs.push(Document {
                        index: i + 1,
                        result: decode_value(v),
                    });
                }
            }
            Err(e) => {
                docs.push(Document {
                    index: i + 1,
                    result: Err(DecodeError::Syntax(e.to_string())),
                });
                break;
            }
        }
    }
    refuse_duplicates(&mut docs);
    Ok(docs)
}

/// A later document declaring an object an earlier one declared is an error naming both (the
/// last would silently win otherwise, and `diff` would always see a change).
fn refuse_duplicates(docs: &mut [Document]) {
    let mut seen = std::collections::HashMap::new();
    for d in docs.iter_mut() {
        let Ok(key) = d.result.as_ref().map(|o| o.key()) else {
            continue;
        };
        let Ok(key) = key else { continue };
        let object = format!("{} {}/{}", key.kind.as_str(), key.namespace, key.name);
        match seen.get(&object) {
            Some(&first) => d.result = Err(DecodeError::Duplicate { object, first }),
            None => {
                seen.insert(object, d.index);
            }
        }
    }
}

/// Expands `kind: List` (and bare JSON arrays) into their items.
fn flatten_lists(v: serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(ref m)
            if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
        {
            match m.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                _ => vec![v],
            }
        }
        other => vec![other],
    }
}

/// Decodes and validates one document. Status is dropped: users declare spec, tend writes status.
pub fn decode_value(v: serde_json::Value) -> Result<AnyObject, DecodeError> {
    let mut obj = decode_shape(v)?;
    obj.validate().map_err(DecodeError::Invalid)?;
    if obj.spec.is_null() {
        obj.spec = serde_json::json!({});
    }
    obj.status = serde_json::Value::Null;
    Ok(obj)
}

/// The object's shape without the kind's validation: size, top-level and `metadata` fields
/// (unknown ones refused with their path), `spec` kept as it is. For a partial configuration
/// such as a server-side apply to an existing object, which need not repeat every field; the
/// merged result is validated when it is written.
pub fn decode_shape(v: serde_json::Value) -> Result<AnyObject, DecodeError> {
    let size = serde_json::to_vec(&v)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if size > MAX_OBJECT_BYTES {
        return Err(DecodeError::TooLarge(size));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let mut errs = FieldErrors::default();
        let inner = e.into_inner().to_string();
        errs.push(
            if path == "." {
                "<root>".to_string()
            } else {
                path
            },
            inner,
        );
        DecodeError::Invalid(errs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: tend.dev/v1\nkind: Network\nmetadata: {name: n1}\nspec: {subnet: 10.1.0.0/24}\n";

    #[test]
    fn multi_document_positions() {
        let input = format!("{GOOD}---\n---\napiVersion: tend.dev/v1\nkind: Nope\nmetadata: {{name: x}}\nspec: {{}}\n");
        let docs = decode_all(&input).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].result.is_ok());
        assert_eq!(docs[1].index, 3);
        let err = docs[1].result.as_ref().unwrap_err().to_string();
        assert!(err.contains("kind: \"Nope\" is not a tend kind"), "{err}");
    }

    #[test]
    fn the_same_object_twice_is_refused_naming_both_documents() {
        let other = GOOD.replace("name: ", "name: other-");
        let input = format!("{GOOD}---\n{other}---\n{GOOD}");
        let docs = decode_all(&input).unwrap();
        assert!(docs[0].result.is_ok() && docs[1].result.is_ok());
        let err = docs[2].result.as_ref().unwrap_err().to_string();
        assert!(err.contains("also declared by document 1"), "{err}");
        assert_eq!(docs[2].index, 3);
    }

    #[test]
    fn garbage_gives_errors_not_panics() {
        for bad in [
            "{",
            ": : :",
            "\t- [",
            "apiVersion: [1",
            "\u{0}\u{1}",
            "- 1\n- 2",
            "42",
            "[]",
        ] {
            match decode_all(bad) {
                Err(_) => {}
                Ok(docs) => assert!(docs.iter().all(|d| d.result.is_err()), "{bad:?}"),
            }
        }
    }

    #[test]
    fn wrong_api_version_and_unknown_field() {
        let docs = decode_all(&GOOD.replace("tend.dev/v1", "v1")).unwrap();
        assert!(docs[0]
            .result
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("apiVersion:"));
        let docs = decode_all(&GOOD.replace("spec:", "spek:")).unwrap();
        let err = docs[0].result.as_ref().unwrap_err().to_string();
        assert!(err.contains("spek"), "{err}");
        let docs = decode_all(&GOOD.replace("name: n1", "name: N_1")).unwrap();
        assert!(docs[0]
            .result
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("metadata.name:"));
    }

    #[test]
    fn json_list_and_array() {
        let j = r#"{"kind":"List","items":[{"apiVersion":"tend.dev/v1","kind":"Sandbox","metadata":{"name":"a"},"spec":{"state":"b"}}]}"#;
        let docs = decode_all(j).unwrap();
        assert_eq!(docs.len(), 1);
        assert!(docs[0].result.is_ok());
    }
}
