//! Local images: existence checks and importing a rootfs (directory or tarball) as an image
//! through `POST /images/create?fromSrc=-`, streamed so a large rootfs is never held in memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::error::Target;
use super::{DockerDriver, DockerError};

const CHUNK: usize = 256 * 1024;

/// Where an imported image's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A directory holding the rootfs (e.g. a State's subvolume); tarred on the fly.
    Directory(PathBuf),
    /// A tar archive (plain, gzip, bzip2 or xz: dockerd detects the compression).
    Tarball(PathBuf),
}

impl ImportSource {
    fn path(&self) -> &Path {
        match self {
            ImportSource::Directory(p) | ImportSource::Tarball(p) => p,
        }
    }
}

impl DockerDriver {
    /// True when `image` (a `repo:tag` or id) exists locally.
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        let ctx = self.ctx("inspect image", image, Target::Image);
        match self
            .call(&ctx, |d| async move { d.inspect_image(image).await })
            .await
        {
            Ok(_) => Ok(true),
            Err(DockerError::ImageNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes the local image `image` unless a container still uses it: true when it was
    /// removed, false when it was in use or already gone.
    ///
    /// # Errors
    /// `Unavailable`, or what else dockerd answers.
    pub async fn remove_image_if_unused(&self, image: &str) -> Result<bool, DockerError> {
        let ctx = self.ctx("remove image", image, Target::Image);
        match self
            .call(&ctx, |d| async move {
                d.remove_image(
                    image,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(DockerError::ImageNotFound { .. } | DockerError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes every local image tagged `repo_prefix…` carrying the label `key=value` that no
    /// container uses and that was made at least `min_age` ago; returns the tags removed.
    ///
    /// # Errors
    /// `Unavailable`, or what else dockerd answers.
    pub async fn remove_unused_images(
        &self,
        repo_prefix: &str,
        (key, value): (&str, &str),
        min_age: std::time::Duration,
    ) -> Result<Vec<String>, DockerError> {
        let ctx = self.ctx("list images", repo_prefix, Target::Image);
        let filters = std::collections::HashMap::from([("label", vec![format!("{key}={value}")])]);
        let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let images = self
            .call(&ctx, |d| async move { d.list_images(Some(opts)).await })
            .await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut removed = Vec::new();
        for image in images {
            if now - image.created < min_age.as_secs() as i64 {
                continue;
            }
            for tag in image
                .repo_tags
                .iter()
                .filter(|t| t.starts_with(repo_prefix))
            {
                if self.remove_image_if_unused(tag).await? {
                    removed.push(tag.clone());
                }
            }
        }
        Ok(removed)
    }

    /// Imports `source` as the image `repo_tag` (like `docker import`) with `labels` on it and
    /// returns the image id. Importing the same content again re-points the tag; bounded by the
    /// import timeout.
    ///
    /// # Errors
    /// `ImportSource` when the directory or file cannot be read; `Unavailable`; `Other` when
    /// dockerd rejects the archive.
    pub async fn import_image(
        &self,
        source: &ImportSource,
        repo_tag: &str,
        labels: &[(&str, &str)],
    ) -> Result<String, DockerError> {
        let (repo, tag) = split_repo_tag(repo_tag);
        let src_err = |err| DockerError::ImportSource {
            source_path: source.path().display().to_string(),
            image: repo_tag.to_string(),
            err,
        };
        let body = match source {
            ImportSource::Tarball(p) => {
                let file = tokio::fs::File::open(p).await.map_err(src_err)?;
                file_chunks(file).boxed()
            }
            ImportSource::Directory(p) => {
                if !p.is_dir() {
                    return Err(src_err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "not a directory",
                    )));
                }
                tar_chunks(p.clone()).boxed()
            }
        };
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(
                labels
                    .iter()
                    .map(|(k, v)| format!("LABEL {k}={v:?}"))
                    .collect(),
            )
            .build();
        let ctx = self.ctx("import image", repo_tag, Target::Image);
        self.call_within(&ctx, self.timeouts.import, |d| async move {
            d.create_image(Some(opts), Some(bollard::body_try_stream(body)), None)
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        let ctx = self.ctx("inspect image", repo_tag, Target::Image);
        let inspect = self
            .call(&ctx, |d| async move { d.inspect_image(repo_tag).await })
            .await?;
        Ok(inspect.id.unwrap_or_default())
    }
}

/// Splits `repo:tag`; the tag defaults to `latest`. A `:` before the last `/` is a registry port.
fn split_repo_tag(s: &str) -> (&str, &str) {
    match s.rfind(':') {
        Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
        _ => (s, "latest"),
    }
}

/// Reads a file as a stream of chunks.
fn file_chunks<B>(file: tokio::fs::File) -> impl Stream<Item = io::Result<B>> + Send
where
    B: From<Vec<u8>> + Send,
{
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((B::from(buf), file)))
    })
}

/// Tars `dir` on the blocking pool and streams the archive in chunks. Ownership, modes and
/// symlinks are kept as they are (symlinks are not followed).
fn tar_chunks<B>(dir: PathBuf) -> impl Stream<Item = io::Result<B>> + Send
where
    B: From<Vec<u8>> + Send,
{
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    tokio::spawn(crate::util::blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = (|| {
            let mut builder = tar::Builder::new(&mut writer);
            builder.follow_symlinks(false);
            builder.append_dir_all(".", &dir)?;
            builder.finish()?;
            drop(builder);
            writer.flush()
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    }));
    futures::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(B::from), rx))
    })
}

/// A `Write` that sends fixed-size chunks down a channel (from a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "import upload ended"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tag_splitting() {
        assert_eq!(split_repo_tag("tend/x:v1"), ("tend/x", "v1"));
        assert_eq!(split_repo_tag("tend/x"), ("tend/x", "latest"));
        assert_eq!(split_repo_tag("reg:5000/x"), ("reg:5000/x", "latest"));
        assert_eq!(split_repo_tag("reg:5000/x:2"), ("reg:5000/x", "2"));
    }

    #[tokio::test]
    async fn directory_streams_as_a_tar_archive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/hello"), b"hi").unwrap();
        std::os::unix::fs::symlink("hello", dir.path().join("bin/hi")).unwrap();
        let chunks: Vec<Vec<u8>> = tar_chunks(dir.path().to_path_buf())
            .try_collect()
            .await
            .unwrap();
        let bytes = chunks.concat();
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert!(names.iter().any(|n| n.ends_with("bin/hello")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("bin/hi")), "{names:?}");
    }
}
