//! Client calls beyond objects: batch apply, events, container logs and exec — what the CLI
//! sends to a running daemon.

use super::batch::ApplyResponse;
use super::client::{collection_path, encode, Client, ClientError};
use crate::runtime_native::cli::LogQuery;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::{json, Value};
use tend_schema::store::Event;
use tend_schema::{AnyObject, Kind, ObjectKey};

/// A `kind: Status` failure body as a [`ClientError::Api`].
pub fn api_error(code: u16, body: Value) -> ClientError {
    ClientError::Api {
        code,
        reason: body["reason"].as_str().unwrap_or("").into(),
        message: body["message"].as_str().unwrap_or("").into(),
        body,
    }
}

/// The [`ClientError::Api`] of a response that is not a success, from its `Status` body.
pub(super) async fn failed_response(resp: hyper::Response<hyper::body::Incoming>) -> ClientError {
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    api_error(code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub(super) fn container_path(namespace: &str, name: &str, sub: &str) -> String {
    format!(
        "{}/{}/{sub}",
        collection_path(Kind::Container, Some(namespace)),
        encode(name)
    )
}

impl Client {
    /// `POST /apis/tend.dev/v1/apply`: applies `objects` in order, stopping at the first
    /// failure (reported in the answer's `failed`, not as an error).
    pub async fn apply_batch(
        &self,
        objects: &[AnyObject],
        dry_run: bool,
    ) -> Result<ApplyResponse, ClientError> {
        let path = format!(
            "/apis/tend.dev/v1/apply{}",
            if dry_run { "?dryRun=All" } else { "" }
        );
        let body = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let r = self
            .raw(
                Method::POST,
                &path,
                Some("application/json"),
                serde_json::to_vec(&body).expect("objects serialize"),
            )
            .await?;
        let v = r.json();
        if v["kind"] == "ApplyResult" {
            return serde_json::from_value(v)
                .map_err(|source| ClientError::Decode { path, source });
        }
        Err(api_error(r.status.as_u16(), v))
    }

    /// Events in `namespace` (None: all), optionally only about `object`, newest last.
    pub async fn events(
        &self,
        namespace: Option<&str>,
        object: Option<&ObjectKey>,
        limit: Option<usize>,
    ) -> Result<Vec<Event>, ClientError> {
        let mut path = match namespace {
            Some(ns) => format!("/apis/tend.dev/v1/namespaces/{ns}/events?"),
            None => "/apis/tend.dev/v1/events?".to_string(),
        };
        if let Some(k) = object {
            path.push_str(&format!(
                "fieldSelector={}&",
                encode(&format!(
                    "involvedObject.kind={},involvedObject.name={}",
                    k.kind.as_str(),
                    k.name
                ))
            ));
        }
        if let Some(l) = limit {
            path.push_str(&format!("limit={l}"));
        }
        let v: Value = self.call(Method::GET, &path, None, vec![]).await?;
        serde_json::from_value(v["items"].clone())
            .map_err(|source| ClientError::Decode { path, source })
    }

    /// `GET .../{plural}/{name}/history`: an `ObjectHistory`.
    pub async fn history(&self, key: &ObjectKey) -> Result<Value, ClientError> {
        let path = format!("{}/history", super::client::object_path(key));
        self.call(Method::GET, &path, None, vec![]).await
    }

    /// `GET .../containers/{name}/revisions`: a `ContainerRevisionList`.
    pub async fn revisions(&self, namespace: &str, name: &str) -> Result<Value, ClientError> {
        let path = container_path(namespace, name, "revisions");
        self.call(Method::GET, &path, None, vec![]).await
    }

    /// `POST .../containers/{name}/rollback`: the Container as written.
    pub async fn rollback(
        &self,
        namespace: &str,
        name: &str,
        req: &super::rollouts::RollbackRequest,
    ) -> Result<AnyObject, ClientError> {
        let path = container_path(namespace, name, "rollback");
        let body = serde_json::to_vec(req).expect("requests serialize");
        self.call(Method::POST, &path, Some("application/json"), body)
            .await
    }

    /// `POST /apis/tend.dev/v1/images/prune`: what image content no State records (removed
    /// unless `dry_run`).
    pub async fn prune_images(
        &self,
        dry_run: bool,
    ) -> Result<crate::image::prune::PruneReport, ClientError> {
        let req = super::images::PruneRequest { dry_run };
        let body = serde_json::to_vec(&req).expect("requests serialize");
        self.call(
            Method::POST,
            "/apis/tend.dev/v1/images/prune",
            Some("application/json"),
            body,
        )
        .await
    }

    /// A container's output as it arrives (`follow` keeps the stream open).
    pub async fn logs(
        &self,
        namespace: &str,
        name: &str,
        q: &LogQuery,
    ) -> Result<BoxStream<'static, Result<Bytes, ClientError>>, ClientError> {
        let mut path = container_path(namespace, name, "log");
        let mut params = vec![];
        if q.follow {
            params.push("follow=true".to_string());
        }
        if let Some(n) = q.tail {
            params.push(format!("tailLines={n}"));
        }
        if let Some(d) = q.since {
            params.push(format!("sinceSeconds={}", d.as_secs_f64().ceil() as u64));
        }
        if q.previous {
            params.push("previous=true".into());
        }
        if q.timestamps {
            params.push("timestamps=true".into());
        }
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        self.stream(&path).await
    }

    /// GETs `path` on a connection of its own and streams the body.
    pub async fn stream(
        &self,
        path: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, ClientError>>, ClientError> {
        let mut send = self.connect().await?;
        let target = self.target.to_string();
        let resp = send
            .send_request(self.build(Method::GET, path, None, vec![])?)
            .await
            .map_err(|source| ClientError::Http {
                target: target.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(failed_response(resp).await);
        }
        let frames = resp.into_body().into_data_stream();
        // The sender rides along so the connection lives as long as the stream.
        Ok(frames
            .map(move |f| {
                let _keep = &send;
                f.map_err(|source| ClientError::Http {
                    target: target.clone(),
                    source,
                })
            })
            .boxed())
    }
}
