//! OpenAPI v3 for tend.dev/v1, built by hand from the schema crate's types (kept in step with
//! `tend_schema::kinds`), so `kubectl explain` works and `kubectl apply` knows the server
//! validates fields itself (`fieldValidation` on PATCH).

use super::AppRef;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use tend_schema::Kind;

pub fn routes() -> Router<AppRef> {
    Router::new()
        .route("/openapi/v3", get(root))
        .route("/openapi/v3/apis/tend.dev/v1", get(group_version))
}

const HASH: &str = concat!("tend-", env!("CARGO_PKG_VERSION"));

async fn root() -> Json<Value> {
    Json(json!({"paths": {"apis/tend.dev/v1": {
        "serverRelativeURL": format!("/openapi/v3/apis/tend.dev/v1?hash={HASH}")
    }}}))
}

async fn group_version() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}

fn s(desc: &str) -> Value {
    json!({"type": "string", "description": desc})
}

fn int(desc: &str) -> Value {
    json!({"type": "integer", "format": "int64", "description": desc})
}

fn quantity(desc: &str) -> Value {
    json!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}], "description": desc})
}

fn obj(desc: &str, props: Value, required: &[&str]) -> Value {
    let mut o = json!({"type": "object", "description": desc, "properties": props});
    if !required.is_empty() {
        o["required"] = json!(required);
    }
    o
}

fn arr(desc: &str, items: Value) -> Value {
    json!({"type": "array", "description": desc, "items": items})
}

fn string_map(desc: &str) -> Value {
    json!({"type": "object", "description": desc, "additionalProperties": {"type": "string"}})
}

fn reference(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}], "default": {}})
}

fn metadata() -> Value {
    obj(
        "Standard object metadata.",
        json!({
            "name": s("Name, a DNS-1123 label, unique per kind within a namespace."),
            "generateName": s("Prefix for a server-generated name when name is empty."),
            "namespace": s("Namespace; default \"default\"."),
            "uid": s("Set by the server."),
            "generation": int("Bumped by the server on every spec change."),
            "resourceVersion": s("The store revision of the last write; send it back for compare-and-swap."),
            "creationTimestamp": json!({"type": "string", "format": "date-time", "description": "Set by the server."}),
            "deletionTimestamp": json!({"type": "string", "format": "date-time", "description": "Set when deletion was requested."}),
            "labels": string_map("Labels for selection."),
            "annotations": string_map("Free-form annotations."),
            "finalizers": arr("Finalizers that must be removed before the row goes.", json!({"type": "string"})),
            "ownerReferences": arr("Owners in the same namespace.", obj("An owner.", json!({
                "apiVersion": s("Owner apiVersion."), "kind": s("Owner kind."), "name": s("Owner name."),
                "uid": s("Owner uid."), "controller": json!({"type": "boolean"}),
                "blockOwnerDeletion": json!({"type": "boolean"}),
            }), &["apiVersion", "kind", "name", "uid"])),
            "managedFields": arr("Field ownership from server-side apply.", json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        }),
        &[],
    )
}

fn conditions() -> Value {
    arr(
        "Observed conditions; Ready exists on every object.",
        obj(
            "A condition.",
            json!({
                "type": s("Condition type, e.g. Ready."), "status": s("True, False or Unknown."),
                "reason": s("CamelCase reason."), "message": s("For people."),
                "lastTransitionTime": json!({"type": "string", "format": "date-time"}),
                "observedGeneration": int("The generation this condition describes."),
            }),
            &["type", "status"],
        ),
    )
}

fn common_status(extra: Value) -> Value {
    let mut props = json!({
        "phase": s("Lifecycle phase."),
        "observedGeneration": int("The generation the status describes."),
        "conditions": conditions(),
    });
    props
        .as_object_mut()
        .expect("object")
        .extend(extra.as_object().cloned().unwrap_or_default());
    obj("Written by tend.", props, &[])
}

fn spec(kind: Kind) -> Value {
    match kind {
        Kind::State => obj(
            "An immutable filesystem tree.",
            json!({"source": obj("Exactly one source.", json!({
            "directory": s("Copy this host directory in."), "tarball": s("Import this .tar or .tar.gz."),
            "state": s("Snapshot of another State."), "sandbox": s("Freeze a Sandbox's content."),
        }), &[])}),
            &["source"],
        ),
        Kind::Sandbox => obj(
            "A writable clone of a State.",
            json!({"state": s("The State to clone.")}),
            &["state"],
        ),
        Kind::Network => obj(
            "A bridge with a subnet.",
            json!({
                "subnet": s("IPv4 CIDR, e.g. 10.88.0.0/24."), "gateway": s("Default: first address of the subnet."),
                "mtu": int("Default 1500."),
            }),
            &["subnet"],
        ),
        Kind::Container => obj(
            "A workload.",
            json!({
                "runtime": s("native (default) or docker."),
                "image": json!({"description": "docker runtime: a local image name, or {state: NAME}.", "x-kubernetes-preserve-unknown-fields": true}),
                "rootfs": obj("native: {sandbox: NAME} or {state: NAME}; omitted = host filesystem.", json!({"sandbox": s("Sandbox name."), "state": s("State name.")}), &[]),
                "command": arr("argv.", json!({"type": "string"})),
                "env": arr("Environment.", obj("A variable.", json!({"name": s("Name."), "value": s("Value.")}), &["name"])),
                "workingDir": s("Working directory."), "hostname": s("Hostname in the UTS namespace."),
                "user": obj("Run as.", json!({"uid": int("User id."), "gid": int("Group id.")}), &[]),
                "resources": obj("Limits.", json!({"memory": quantity("Memory, e.g. 64Mi."), "cpu": quantity("CPU, e.g. 500m."), "pids": int("Most processes.")}), &[]),
                "networks": arr("Attachments.", obj("An attachment.", json!({"name": s("Network name."), "ip": s("Optional fixed IP.")}), &["name"])),
                "restartPolicy": s("Always (default), OnFailure or Never."),
                "stopGracePeriodSeconds": int("SIGTERM-to-SIGKILL grace; default 10."),
                "init": json!({"type": "boolean", "description": "Run an init as PID 1 that forwards signals to the command and reaps zombies (docker run --init)."}),
                "hostNetwork": json!({"type": "boolean", "description": "Share the host's network namespace (admin only)."}),
                "securityContext": obj("Isolation; defaults to Docker's.", json!({
                    "privileged": json!({"type": "boolean", "description": "All capabilities, no seccomp (admin only)."}),
                    "capabilities": obj("Added to / dropped from Docker's default set.", json!({"add": arr("Names.", json!({"type": "string"})), "drop": arr("Names, or ALL.", json!({"type": "string"}))}), &[]),
                    "seccompProfile": s("RuntimeDefault (default) or Unconfined (admin only)."),
                    "noNewPrivileges": json!({"type": "boolean", "description": "Default true."}),
                    "readOnlyRootFilesystem": json!({"type": "boolean", "description": "Mount the root read-only."}),
                    "runAsNonRoot": json!({"type": "boolean", "description": "Refuse to start as uid 0."}),
                    "userNamespace": json!({"type": "boolean", "description": "Native runtime with a rootfs: container ids 0-65535 are an unprivileged host range allocated to this Container (status.userNamespace); the rootfs is id-mapped so host-root files are root inside."}),
                }), &[]),
            }),
            &[],
        ),
    }
}

fn status(kind: Kind) -> Value {
    common_status(match kind {
        Kind::State => {
            json!({"path": s("Where the tree is."), "backend": s("btrfs or copy."), "sizeBytes": int("Size.")})
        }
        Kind::Sandbox => json!({"path": s("Where the clone is."), "backend": s("btrfs or copy.")}),
        Kind::Network => json!({"bridge": s("Bridge name."), "leases": int("Addresses leased.")}),
        Kind::Container => json!({
            "pid": int("Workload pid (native)."), "containerID": s("Docker container id."),
            "startedAt": json!({"type": "string", "format": "date-time"}), "restartCount": int("Restarts."),
            "lastState": json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            "networks": arr("Attachments as observed.", json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
            "userNamespace": obj("Host ids of its user namespace: container id n is host id hostId+n.", json!({"hostId": int("Host uid/gid of container root."), "size": int("Ids mapped (65536).")}), &[]),
        }),
    })
}

fn gvk(kind: Kind) -> Value {
    json!({"group": tend_schema::API_GROUP, "version": "v1", "kind": kind.as_str()})
}

fn param(name: &str, desc: &str) -> Value {
    json!({"name": name, "in": "query", "description": desc, "schema": {"type": "string"}, "uniqueItems": true})
}

fn op(kind: Kind, verb: &str, id: &str, params: &[Value]) -> Value {
    let name = format!("dev.tend.v1.{}", kind.as_str());
    json!({
        "operationId": format!("{id}{}", kind.as_str()),
        "tags": ["tendDev_v1"],
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}},
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": gvk(kind),
    })
}

fn document() -> Value {
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert("dev.tend.v1.ObjectMeta".into(), metadata());
    let write = [
        param("dryRun", "All: validate, write nothing."),
        param("fieldManager", "Who makes the change."),
        param(
            "fieldValidation",
            "Strict is always in force: unknown fields are rejected.",
        ),
    ];
    for kind in Kind::ALL {
        let name = format!("dev.tend.v1.{}", kind.as_str());
        schemas.insert(
            name.clone(),
            json!({
                "type": "object",
                "description": format!("A tend {}.", kind.as_str()),
                "required": ["apiVersion", "kind", "metadata", "spec"],
                "properties": {
                    "apiVersion": s("tend.dev/v1"),
                    "kind": s(kind.as_str()),
                    "metadata": reference("dev.tend.v1.ObjectMeta"),
                    "spec": spec(kind),
                    "status": status(kind),
                },
                "x-kubernetes-group-version-kind": [gvk(kind)],
            }),
        );
        let mut force = write.to_vec();
        force.push(param(
            "force",
            "Server-side apply: take over conflicting fields.",
        ));
        let base = format!(
            "/apis/tend.dev/v1/namespaces/{{namespace}}/{}",
            kind.plural()
        );
        let path_params = json!([
            {"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}},
        ]);
        paths.insert(base.clone(), json!({
            "parameters": path_params,
            "get": op(kind, "list", "list", &[param("labelSelector", ""), param("fieldSelector", ""), param("watch", "")]),
            "post": op(kind, "post", "create", &write),
        }));
        paths.insert(format!("{base}/{{name}}"), json!({
            "parameters": [path_params[0].clone(), {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
            "get": op(kind, "get", "read", &[]),
            "put": op(kind, "put", "replace", &write),
            "patch": op(kind, "patch", "patch", &force),
            "delete": op(kind, "delete", "delete", &write[..1]),
        }));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "tend", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kind_has_a_schema_and_a_patch_with_field_validation() {
        let d = super::document();
        for k in tend_schema::Kind::ALL {
            assert!(d["components"]["schemas"][format!("dev.tend.v1.{}", k.as_str())].is_object());
            let p = &d["paths"][format!(
                "/apis/tend.dev/v1/namespaces/{{namespace}}/{}/{{name}}",
                k.plural()
            )]["patch"];
            assert!(p["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "fieldValidation"));
        }
    }
}
