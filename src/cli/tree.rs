//! `tend tree KIND/NAME`: why something is (not) Ready — the object, then everything it uses
//! by name (dependsOn Containers, its Sandbox or State, its Networks, a State's source…),
//! recursively, each with its Ready condition.

use super::backend::Backend;
use std::collections::BTreeMap;
use std::process::ExitCode;
use tend_schema::kinds::references;
use tend_schema::meta::CommonStatus;
use tend_schema::{AnyObject, Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `container/web`, or the kind with the name as the next argument.
    pub object: String,
    pub name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
}

/// One object as the tree shows it: its Ready condition and what it uses.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    /// `Ready=True Running: pid 12 (native)`, or `not found`.
    line: String,
    uses: Vec<ObjectKey>,
}

fn node(o: Option<&AnyObject>, key: &ObjectKey) -> Node {
    let Some(o) = o else {
        return Node {
            line: "not found".into(),
            uses: vec![],
        };
    };
    let st: CommonStatus = serde_json::from_value(o.status.clone()).unwrap_or_default();
    let line = match st.condition("Ready") {
        Some(c) if c.message.is_empty() => format!("Ready={:?} {}", c.status, c.reason),
        Some(c) => format!("Ready={:?} {}: {}", c.status, c.reason, c.message),
        None => "no status yet".into(),
    };
    Node {
        line,
        uses: references(key.kind, &key.namespace, &o.spec),
    }
}

/// Renders the tree under `root`; an object met twice is shown once, then `(above)`.
fn render(root: &ObjectKey, nodes: &BTreeMap<ObjectKey, Node>) -> String {
    let mut out = String::new();
    let mut shown = std::collections::BTreeSet::new();
    walk(root, nodes, "", "", &mut shown, &mut out);
    out
}

fn walk(
    key: &ObjectKey,
    nodes: &BTreeMap<ObjectKey, Node>,
    first: &str,
    rest: &str,
    shown: &mut std::collections::BTreeSet<ObjectKey>,
    out: &mut String,
) {
    let name = format!("{}/{}", key.kind.singular(), key.name);
    if !shown.insert(key.clone()) {
        out.push_str(&format!("{first}{name} (above)\n"));
        return;
    }
    let Some(n) = nodes.get(key) else { return };
    out.push_str(&format!("{first}{name}  {}\n", n.line));
    for (i, u) in n.uses.iter().enumerate() {
        let last = i + 1 == n.uses.len();
        let (f, r) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        walk(
            u,
            nodes,
            &format!("{rest}{f}"),
            &format!("{rest}{r}"),
            shown,
            out,
        );
    }
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let (kind, name) = match (args.object.split_once('/'), args.name) {
        (Some((k, n)), None) => (k.to_string(), n.to_string()),
        (None, Some(n)) => (args.object.clone(), n),
        _ => anyhow::bail!("usage: tend tree KIND/NAME (or KIND NAME)"),
    };
    let kind: Kind = kind.parse().map_err(anyhow::Error::msg)?;
    let root = ObjectKey::new(kind, args.namespace, name);
    backend.get(&root).await?;
    let mut nodes = BTreeMap::new();
    let mut todo = vec![root.clone()];
    while let Some(k) = todo.pop() {
        if nodes.contains_key(&k) {
            continue;
        }
        let o = backend.get(&k).await.ok();
        let n = node(o.as_ref(), &k);
        todo.extend(n.uses.iter().cloned());
        nodes.insert(k, n);
    }
    print!("{}", render(&root, &nodes));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(kind: Kind, n: &str) -> ObjectKey {
        ObjectKey::new(kind, "default", n)
    }

    #[test]
    fn the_chain_is_drawn_with_each_condition_and_shared_objects_once() {
        let mut nodes = BTreeMap::new();
        let n = |line: &str, uses: Vec<ObjectKey>| Node {
            line: line.into(),
            uses,
        };
        nodes.insert(
            k(Kind::Container, "web"),
            n(
                "Ready=False WaitingForDependency",
                vec![k(Kind::Container, "db"), k(Kind::Network, "net")],
            ),
        );
        nodes.insert(
            k(Kind::Container, "db"),
            n("Ready=True Running", vec![k(Kind::Network, "net")]),
        );
        nodes.insert(k(Kind::Network, "net"), n("Ready=True Ready", vec![]));
        let out = render(&k(Kind::Container, "web"), &nodes);
        assert_eq!(
            out,
            "container/web  Ready=False WaitingForDependency\n\
             ├─ container/db  Ready=True Running\n\
             │  └─ network/net  Ready=True Ready\n\
             └─ network/net (above)\n"
        );
    }
}
