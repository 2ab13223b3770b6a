//! `tend get`: list objects or show one, as a table, YAML, JSON or names; `-w` keeps watching.

use super::backend::Backend;
use super::output::{list_value, print_rows, print_table, to_yaml, Format};
use anyhow::{bail, Context};
use futures::StreamExt;
use std::process::ExitCode;
use tend_schema::selector::Selector;
use tend_schema::{Kind, ObjectKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// state, sandbox, network, container (plural and short names work), `all` or `events`.
    pub kind: String,
    /// One object's name.
    pub name: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, print every change as it happens (Ctrl-C to stop).
    #[arg(short = 'w', long)]
    pub watch: bool,
}

pub async fn run(backend: &Backend, args: Args) -> anyhow::Result<ExitCode> {
    let ns = (!args.all_namespaces).then(|| args.namespace.clone());
    if args.kind == "events" || args.kind == "event" || args.kind == "ev" {
        return events(backend, ns, &args).await;
    }
    let kind = if args.kind == "all" {
        None
    } else {
        Some(args.kind.parse::<Kind>().map_err(anyhow::Error::msg)?)
    };
    let selector =
        Selector::parse(args.selector.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
    if let (Some(name), Some(k)) = (&args.name, kind) {
        let key = ObjectKey::new(k, args.namespace.clone(), name.clone());
        let obj = backend.get(&key).await?;
        if !args.watch {
            print_objects(&[obj], &args, true, None);
            return Ok(ExitCode::SUCCESS);
        }
    } else if args.name.is_some() {
        bail!("a name needs a single kind, not `all`");
    }
    let labels = args.selector.as_deref().unwrap_or("");
    let list = backend
        .list(kind, ns.as_deref(), labels, args.name.as_deref())
        .await?;
    if list.items.is_empty() && !args.watch && matches!(args.output, Format::Table | Format::Wide) {
        eprintln!(
            "No resources found{}.",
            ns.map(|n| format!(" in {n} namespace")).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_objects(&list.items, &args, true, Some(list.revision));
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    let kinds = kind.map_or_else(|| Kind::ALL.to_vec(), |k| vec![k]);
    let mut stream = backend
        .watch(&kinds, ns.as_deref(), list.revision)
        .await
        .context("starting the watch")?;
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let o = &ev.object;
        let relevant = ns.as_deref().is_none_or(|n| n == o.metadata.ns())
            && args.name.as_deref().is_none_or(|n| n == o.metadata.name)
            && selector.matches(&o.metadata.labels);
        if relevant {
            print_objects(std::slice::from_ref(o), &args, false, None);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_objects(
    objs: &[tend_schema::AnyObject],
    args: &Args,
    header: bool,
    list_rev: Option<u64>,
) {
    match args.output {
        Format::Table | Format::Wide => print_table(
            objs,
            args.output == Format::Wide,
            args.all_namespaces,
            header,
        ),
        Format::Name => {
            for o in objs {
                println!("{}.tend.dev/{}", o.kind.to_lowercase(), o.metadata.name);
            }
        }
        Format::Yaml | Format::Json => {
            let v = match (objs, list_rev) {
                ([one], None) => serde_json::to_value(one).unwrap_or_default(),
                _ if args.name.is_some() && objs.len() == 1 => {
                    serde_json::to_value(&objs[0]).unwrap_or_default()
                }
                _ => list_value(objs, list_rev.unwrap_or(0)),
            };
            if args.output == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                if args.watch {
                    println!("---");
                }
                print!("{}", to_yaml(&v));
            }
        }
    }
}

/// `tend get events`: a table, or the events as JSON / YAML (a `List` of them). Events carry
/// no labels or names of their own and there is no event watch yet: `-l`, `-w`, a name and
/// `-o name` are refused rather than ignored.
async fn events(backend: &Backend, ns: Option<String>, args: &Args) -> anyhow::Result<ExitCode> {
    if args.selector.is_some() {
        bail!("events have no labels: -l does not apply to them (see `tend describe KIND/NAME` for one object's events)");
    }
    if args.watch {
        bail!("watching events is not supported: -w does not apply to events");
    }
    if args.name.is_some() {
        bail!("events are listed, not named: drop the name (see `tend describe KIND/NAME` for one object's events)");
    }
    let evs = backend.events(ns.as_deref(), None, None).await?;
    match args.output {
        Format::Json | Format::Yaml => {
            let v = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": evs});
            if args.output == Format::Json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", to_yaml(&v));
            }
            return Ok(ExitCode::SUCCESS);
        }
        Format::Name => bail!("events have no names: -o name does not apply to them"),
        Format::Table | Format::Wide => {}
    }
    if evs.is_empty() {
        eprintln!("No events found.");
        return Ok(ExitCode::SUCCESS);
    }
    let head = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"]
        .map(String::from)
        .to_vec();
    let rows = evs
        .iter()
        .map(|e| {
            vec![
                super::output::age(Some(&e.last_timestamp)),
                e.type_.as_str().into(),
                e.reason.clone(),
                format!("{}/{}", e.kind.to_lowercase(), e.name),
                e.count.to_string(),
                e.message.clone(),
            ]
        })
        .collect();
    print_rows(Some(head), rows);
    Ok(ExitCode::SUCCESS)
}
