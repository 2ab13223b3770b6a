//! `tend top`: what each running Container uses, from the daemon's last usage sample
//! (`status.usage`), sorted like `kubectl top` (CPU by default); `-w` redraws every interval.

use super::backend::Backend;
use std::process::ExitCode;
use std::time::Duration;
use tend_schema::kinds::container::ContainerStatus;
use tend_schema::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Cpu,
    Memory,
    Pids,
    Name,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Only Containers matching this label selector.
    #[arg(short = 'l', long, default_value = "")]
    pub selector: String,
    #[arg(long, value_enum, default_value = "cpu")]
    pub sort_by: SortBy,
    /// Redraw every `--interval` seconds until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    namespace: String,
    name: String,
    /// Cores over the last sampling interval (None: only one sample so far).
    cores: Option<f64>,
    working_set: u64,
    pids: u64,
    cpu_seconds: f64,
}

/// Memory as people read it: `12.3Mi`.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    match i {
        0 => format!("{b}"),
        _ => format!("{v:.1}{}", UNITS[i]),
    }
}

fn sort(rows: &mut [Row], by: SortBy) {
    let key = |r: &Row| (r.namespace.clone(), r.name.clone());
    match by {
        SortBy::Cpu => rows.sort_by(|a, b| {
            b.cores
                .unwrap_or(0.0)
                .total_cmp(&a.cores.unwrap_or(0.0))
                .then_with(|| key(a).cmp(&key(b)))
        }),
        SortBy::Memory => {
            rows.sort_by(|a, b| b.working_set.cmp(&a.working_set).then(key(a).cmp(&key(b))))
        }
        SortBy::Pids => rows.sort_by(|a, b| b.pids.cmp(&a.pids).then(key(a).cmp(&key(b)))),
        SortBy::Name => rows.sort_by_key(key),
    }
}

fn render(rows: &[Row], all_namespaces: bool) -> String {
    let mut table = vec![];
    let mut head = vec![
        "NAME",
        "CPU(cores)",
        "MEMORY(working set)",
        "PIDS",
        "CPU TIME",
    ];
    if all_namespaces {
        head.insert(0, "NAMESPACE");
    }
    table.push(head.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for r in rows {
        let mut line = vec![
            r.name.clone(),
            r.cores
                .map_or("-".into(), |c| format!("{:.0}m", c * 1000.0)),
            bytes(r.working_set),
            r.pids.to_string(),
            format!("{:.1}s", r.cpu_seconds),
        ];
        if all_namespaces {
            line.insert(0, r.namespace.clone());
        }
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| table.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    table
        .iter()
        .map(|l| {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("   ").trim_end().to_string() + "\n"
        })
        .collect()
}

async fn rows(b: &Backend, a: &Args) -> anyhow::Result<Vec<Row>> {
    let ns = (!a.all_namespaces).then_some(a.namespace.as_str());
    let list = b
        .list(Some(Kind::Container), ns, &a.selector, None)
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let mut rows: Vec<Row> = list
        .items
        .into_iter()
        .filter_map(|o| {
            let st: ContainerStatus = serde_json::from_value(o.status).ok()?;
            let u = st.usage?;
            Some(Row {
                namespace: o.metadata.ns().to_string(),
                name: o.metadata.name,
                cores: u.cpu_cores,
                working_set: u.working_set_bytes,
                pids: u.pids,
                cpu_seconds: u.cpu_seconds,
            })
        })
        .collect();
    sort(&mut rows, a.sort_by);
    Ok(rows)
}

pub async fn run(b: &Backend, a: Args) -> anyhow::Result<ExitCode> {
    if !b.is_daemon() {
        anyhow::bail!("tend top needs a running daemon (usage is sampled by `tend serve`)");
    }
    loop {
        let rows = rows(b, &a).await?;
        let mut out = String::new();
        if a.watch {
            out.push_str("\x1b[H\x1b[2J");
        }
        match rows.is_empty() {
            true => out.push_str("no running Container has been sampled yet\n"),
            false => out.push_str(&render(&rows, a.all_namespaces)),
        }
        print!("{out}");
        if !a.watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_secs(a.interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, cores: Option<f64>, ws: u64) -> Row {
        Row {
            namespace: "default".into(),
            name: name.into(),
            cores,
            working_set: ws,
            pids: 1,
            cpu_seconds: 0.25,
        }
    }

    #[test]
    fn sorted_by_cpu_then_name_with_unknown_rates_last() {
        let mut rows = vec![
            row("b", None, 10),
            row("a", Some(0.5), 5),
            row("c", Some(0.5), 7),
            row("d", Some(1.5), 1),
        ];
        sort(&mut rows, SortBy::Cpu);
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["d", "a", "c", "b"]);
        sort(&mut rows, SortBy::Memory);
        assert_eq!(rows[0].name, "b");
    }

    #[test]
    fn the_table_says_millicores_and_binary_units() {
        let text = render(&[row("web", Some(0.25), 3 << 20)], false);
        assert_eq!(
            text,
            "NAME   CPU(cores)   MEMORY(working set)   PIDS   CPU TIME\n\
             web    250m         3.0Mi                 1      0.2s\n"
        );
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(1536), "1.5Ki");
    }
}
