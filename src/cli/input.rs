//! Reading `-f` inputs: files, directories (`-R` to recurse) and stdin, decoded per document.

use anyhow::{bail, Context};
use std::io::Read;
use std::path::{Path, PathBuf};
use tend_schema::decode::{decode_all, Document};
use tend_schema::AnyObject;

/// One decoded document with where it came from, for error messages.
pub struct Source {
    pub file: String,
    pub index: usize,
    pub result: Result<AnyObject, String>,
}

/// Reads every input and decodes every document. Unreadable files and YAML syntax errors are
/// reported as failed documents, so the caller can list every problem at once.
pub fn read_inputs(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<Source>> {
    if paths.is_empty() {
        bail!("no input: give -f FILE, -f DIR or -f -");
    }
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(None);
        } else if p.is_dir() {
            collect_dir(p, recursive, &mut files)?;
        } else {
            files.push(Some(p.clone()));
        }
    }
    let mut out = Vec::new();
    for f in files {
        let (name, text) = match &f {
            None => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading stdin")?;
                ("<stdin>".to_string(), s)
            }
            Some(p) => {
                let name = p.display().to_string();
                match std::fs::read(p) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(s) => (name, s),
                        Err(_) => {
                            out.push(Source {
                                file: name,
                                index: 1,
                                result: Err("not UTF-8 text".into()),
                            });
                            continue;
                        }
                    },
                    Err(e) => {
                        out.push(Source {
                            file: name,
                            index: 1,
                            result: Err(format!("cannot read: {e}")),
                        });
                        continue;
                    }
                }
            }
        };
        match decode_all(&text) {
            Ok(docs) => out.extend(docs.into_iter().map(|Document { index, result }| Source {
                file: name.clone(),
                index,
                result: result.map_err(|e| e.to_string()),
            })),
            Err(e) => out.push(Source {
                file: name,
                index: 1,
                result: Err(e.to_string()),
            }),
        }
    }
    Ok(out)
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<Option<PathBuf>>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                collect_dir(&p, recursive, out)?;
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(Some(p));
        }
    }
    Ok(())
}

/// Splits sources into objects, or returns every error message when any document is bad.
pub fn all_valid(sources: Vec<Source>) -> Result<Vec<(String, usize, AnyObject)>, Vec<String>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for s in sources {
        match s.result {
            Ok(o) => ok.push((s.file, s.index, o)),
            Err(e) => errors.push(format!("{} document {}: {e}", s.file, s.index)),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(errors)
    }
}
