//! Local-directory object store for the embedded mode.
//!
//! `put_if_absent` writes a temporary file, fsyncs it, then hard-links it to
//! the final name (which fails if the name exists, atomically) and fsyncs the
//! directory: an object is either absent or complete, never torn, and never
//! overwritten.

use super::{Body, ObjectError, ObjectMeta, ObjectStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

/// Objects as files under a root directory.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
}

fn transient(key: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Transient {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

fn io_error(key: &str, e: std::io::Error) -> ObjectError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ObjectError::NotFound(key.to_string())
    } else {
        transient(key, e)
    }
}

impl LocalDirStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: &Path) -> Result<Self, ObjectError> {
        std::fs::create_dir_all(root.join(".tmp")).map_err(|e| transient("", e))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, ObjectError> {
        let rel = Path::new(key);
        let safe = !key.is_empty()
            && !key.starts_with(".tmp")
            && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(ObjectError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(rel))
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
    ) -> Result<T, ObjectError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| transient("", e))?
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn list_into(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<ObjectMeta>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let key = rel.to_string_lossy().replace('\\', "/");
        if key.starts_with(".tmp") {
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                list_into(root, &path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            out.push(ObjectMeta {
                key,
                size: entry.metadata()?.len(),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_body_if_absent(&self, key: &str, body: Body) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        let tmp = self
            .root
            .join(".tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let key = key.to_string();
        Self::blocking(move || {
            let parent = path
                .parent()
                .ok_or_else(|| ObjectError::InvalidKey(key.clone()))?;
            std::fs::create_dir_all(parent).map_err(|e| transient(&key, e))?;
            let mut f = std::fs::File::create(&tmp).map_err(|e| transient(&key, e))?;
            for part in body.parts() {
                f.write_all(part).map_err(|e| transient(&key, e))?;
            }
            f.sync_all().map_err(|e| transient(&key, e))?;
            drop(f);
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(ObjectError::AlreadyExists(key));
                }
                Err(e) => return Err(transient(&key, e)),
            }
            fsync_dir(parent).map_err(|e| transient(&key, e))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        Self::blocking(move || {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| io_error(&key, e))
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        Self::blocking(move || {
            let mut f = std::fs::File::open(&path).map_err(|e| io_error(&key, e))?;
            let len = range.end.saturating_sub(range.start) as usize;
            let mut buf = vec![0u8; len];
            f.seek(SeekFrom::Start(range.start))
                .map_err(|e| transient(&key, e))?;
            f.read_exact(&mut buf).map_err(|e| transient(&key, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        Self::blocking(move || {
            let mut out = Vec::new();
            list_into(&root, &root, &prefix, &mut out).map_err(|e| transient(&prefix, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        Self::blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(transient(&key, e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conditional_create_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDirStore::open(dir.path()).unwrap();
        s.put_if_absent(
            "ns/wal/w/1/00000000000000000001",
            Bytes::from_static(b"abc"),
        )
        .await
        .unwrap();
        let again = s
            .put_if_absent(
                "ns/wal/w/1/00000000000000000001",
                Bytes::from_static(b"zzz"),
            )
            .await;
        assert!(matches!(again, Err(ObjectError::AlreadyExists(_))));
        assert_eq!(
            &s.get("ns/wal/w/1/00000000000000000001").await.unwrap()[..],
            b"abc"
        );
        assert_eq!(
            &s.get_range("ns/wal/w/1/00000000000000000001", 1..3)
                .await
                .unwrap()[..],
            b"bc"
        );
        let listed = s.list("ns/wal/w/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(s.list("ns/wal/x").await.unwrap().is_empty());
        assert!(matches!(
            s.get("ns/missing").await,
            Err(ObjectError::NotFound(_))
        ));
        assert!(matches!(
            s.put_if_absent("../evil", Bytes::new()).await,
            Err(ObjectError::InvalidKey(_))
        ));
    }
}
