//! Decoding requests: query parameters, media types, bodies, path segments into typed requests.

use super::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use serde_json::Value;
use std::collections::HashMap;
use tend_schema::store::{ListQuery, Propagation};
use tend_schema::{Kind, ObjectKey};

/// Query parameters every verb may carry, parsed once.
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub dry_run: bool,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub field_manager: Option<String>,
    pub force: bool,
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds` of a DELETE.
    pub grace_period_seconds: Option<i64>,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
}

impl Params {
    pub fn parse(q: &HashMap<String, String>) -> ApiResult<Self> {
        let mut p = Params::default();
        for (k, v) in q {
            match k.as_str() {
                "dryRun" => match v.as_str() {
                    "All" => p.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "dryRun: {other:?} is not supported (only All)"
                        )))
                    }
                },
                "watch" => p.watch = truthy(v),
                "resourceVersion" => p.resource_version = Some(v.clone()).filter(|s| !s.is_empty()),
                "labelSelector" => p.label_selector = Some(v.clone()),
                "fieldSelector" => p.field_selector = Some(v.clone()),
                "allowWatchBookmarks" => p.allow_bookmarks = truthy(v),
                "timeoutSeconds" => {
                    p.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("timeoutSeconds: {v:?} is not a number"))
                    })?)
                }
                "fieldManager" => p.field_manager = Some(v.clone()),
                "gracePeriodSeconds" => {
                    p.grace_period_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("gracePeriodSeconds: {v:?} is not a number"))
                    })?)
                }
                "force" => p.force = truthy(v),
                "propagationPolicy" => {
                    p.propagation = Some(v.parse().map_err(ApiError::bad_request)?)
                }
                // Accepted and ignored, as a server without these features would.
                _ => {}
            }
        }
        Ok(p)
    }

    /// The store query for a list in `namespace` (None: all namespaces).
    pub fn list_query(&self, kind: Kind, namespace: Option<&str>) -> ApiResult<ListQuery> {
        let selector =
            tend_schema::selector::Selector::parse(self.label_selector.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("labelSelector: {e}")))?;
        let mut q = ListQuery {
            kind: Some(kind),
            namespace: namespace.map(str::to_string),
            selector,
            name: None,
        };
        for term in field_terms(self.field_selector.as_deref().unwrap_or("")) {
            let (field, value) = term?;
            let value = value.to_string();
            match field {
                "metadata.name" => q.name = Some(value),
                "metadata.namespace" => match &q.namespace {
                    Some(ns) if *ns != value => q.name = Some(String::new()),
                    _ => q.namespace = Some(value),
                },
                other => {
                    return Err(ApiError::bad_request(format!(
                        "fieldSelector: field {other:?} is not supported (metadata.name, metadata.namespace)"
                    )))
                }
            }
        }
        Ok(q)
    }
}

/// The resource named by a path's plural, or 404 like kube for an unknown resource.
pub fn kind_of(plural: &str) -> ApiResult<Kind> {
    Kind::ALL
        .into_iter()
        .find(|k| k.plural() == plural)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "the server could not find the requested resource {plural:?}"
            ))
        })
}

pub fn key(plural: &str, ns: &str, name: &str) -> ApiResult<ObjectKey> {
    Ok(ObjectKey::new(kind_of(plural)?, ns, name))
}

/// The media type of the body, without parameters, lowercased.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// True when the client asks for a `meta.k8s.io/v1` Table (kubectl get).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',').any(|m| {
                let m = m.replace(' ', "");
                m.contains("as=Table")
                    && m.contains("g=meta.k8s.io")
                    && m.contains("v=v1")
                    && !m.contains("v=v1beta1")
            })
        })
}

/// Parses a JSON or YAML object body; anything else is 400/415, never a panic.
pub fn parse_object_body(headers: &HeaderMap, body: &[u8], allow_yaml: bool) -> ApiResult<Value> {
    let ct = content_type(headers);
    let yaml = match ct.as_str() {
        "" | "application/json" => false,
        "application/yaml" | "application/x-yaml" | "text/yaml" if allow_yaml => true,
        other => {
            return Err(ApiError::unsupported_media(
                other,
                "application/json, application/yaml",
            ))
        }
    };
    parse_bytes(body, yaml)
}

/// JSON, or YAML when `yaml`; the value must be an object.
pub fn parse_bytes(body: &[u8], yaml: bool) -> ApiResult<Value> {
    let v: Value = if yaml {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
        serde_yaml_ng::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("malformed YAML body: {e}")))?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON/YAML object"));
    }
    Ok(v)
}

/// Fills in `metadata.namespace` from the path and refuses a body naming another one; checks
/// the body's kind against the path's resource.
pub fn fit_to_path(v: &mut Value, kind: Kind, ns: &str, name: Option<&str>) -> ApiResult<()> {
    if let Some(k) = v.get("kind").and_then(Value::as_str) {
        if k != kind.as_str() {
            return Err(ApiError::bad_request(format!(
                "the body is a {k}, but the path is for {}",
                kind.plural()
            )));
        }
    }
    let meta = v
        .as_object_mut()
        .expect("checked object")
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        Some(n) if n != ns => {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
            )))
        }
        _ => {
            meta.insert("namespace".into(), ns.into());
        }
    }
    if let Some(name) = name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => {
                meta.insert("name".into(), name.into());
            }
        }
    }
    Ok(())
}

/// The `field=value` (or `field==value`) terms of a `fieldSelector`, trimmed; a term without
/// `=` is a 400 naming it.
pub fn field_terms(selector: &str) -> impl Iterator<Item = ApiResult<(&str, &str)>> {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|term| {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("fieldSelector: {term:?} is not field=value"))
                })?;
            Ok((field.trim(), value.trim()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors() {
        let p = Params {
            field_selector: Some("metadata.name=web,metadata.namespace==a".into()),
            ..Default::default()
        };
        let q = p.list_query(Kind::Container, None).unwrap();
        assert_eq!(q.name.as_deref(), Some("web"));
        assert_eq!(q.namespace.as_deref(), Some("a"));
        let p = Params {
            field_selector: Some("spec.x=1".into()),
            ..Default::default()
        };
        assert_eq!(p.list_query(Kind::Container, None).unwrap_err().code, 400);
    }

    #[test]
    fn table_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
                .parse()
                .unwrap(),
        );
        assert!(wants_table(&h));
        h.insert("accept", "application/json".parse().unwrap());
        assert!(!wants_table(&h));
    }
}
