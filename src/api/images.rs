//! `POST /apis/tend.dev/v1/images/prune` (`{"dryRun": true}` unless told otherwise): the call
//! `tend image prune` makes. Image content is shared by every namespace, so only admin
//! credentials may ask (a namespace token gets 403).

use super::error::{ApiError, ApiResult};
use super::{AppRef, Identity};
use crate::image::prune::{PruneError, PruneReport};
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

/// The body of a prune.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneRequest {
    /// Only report what would be removed (the default).
    #[serde(default = "yes")]
    pub dry_run: bool,
}

fn yes() -> bool {
    true
}

/// `POST {base}/images/prune`.
pub(crate) async fn prune_handler(
    State(s): State<AppRef>,
    Extension(id): Extension<Identity>,
    body: axum::body::Bytes,
) -> ApiResult<Json<PruneReport>> {
    if id.credential() != tend_schema::policy::Credential::Admin {
        return Err(ApiError::forbidden(
            "images/prune: image content is shared by all namespaces; only admin credentials may prune it",
        ));
    }
    let req: PruneRequest = if body.is_empty() {
        PruneRequest { dry_run: true }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("prune request: {e}")))?
    };
    if !req.dry_run {
        id.check(None, true)?;
    }
    let Some(pruner) = &s.images else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "this server has no image store",
        ));
    };
    match pruner.prune(req.dry_run).await {
        Ok(r) => Ok(Json(r)),
        Err(e @ PruneError::Unrecorded { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.to_string(),
        )),
    }
}
