//! Integrity of downloaded checkpoints. Online, every downloaded file is checked
//! against the hub's own hashes (sha256 of LFS files, the git blob id of the
//! others) and a manifest of sha256 sums is written beside the files; offline,
//! `--verify` checks the files against that manifest.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use crate::error::{ModelError, Result};

pub const MANIFEST: &str = "medgemma-manifest.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Manifest {
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct FileEntry {
    sha256: String,
    size: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// sha256 and git blob sha1 of a file, read once.
fn digests(path: &Path) -> Result<(String, String, u64)> {
    let size = std::fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    let mut file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut sha256 = sha2::Sha256::new();
    let mut blob = sha1::Sha1::new();
    blob.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        blob.update(&buf[..n]);
    }
    Ok((hex(&sha256.finalize()), hex(&blob.finalize()), size))
}

/// Writes the manifest of `files` (names relative to `dir`).
pub fn write_manifest(dir: &Path, files: &[String]) -> Result<()> {
    let mut m = Manifest {
        files: BTreeMap::new(),
    };
    for f in files {
        let (sha256, _, size) = digests(&dir.join(f))?;
        m.files.insert(f.clone(), FileEntry { sha256, size });
    }
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&m).map_err(|e| ModelError::Input(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| io_err(&path, e))
}

/// Checks every file of the manifest in `dir`.
pub fn verify_manifest(dir: &Path) -> Result<usize> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|_| ModelError::Weights {
        file: path.display().to_string(),
        msg:
            "no manifest to verify against: it is written when the model is first downloaded online"
                .into(),
    })?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| ModelError::Weights {
        file: path.display().to_string(),
        msg: format!("unreadable manifest: {e}"),
    })?;
    for (name, want) in &m.files {
        let (sha256, _, size) = digests(&dir.join(name))?;
        if sha256 != want.sha256 || size != want.size {
            return Err(ModelError::Weights {
                file: dir.join(name).display().to_string(),
                msg: "does not match the manifest written at download (corrupt or changed)".into(),
            });
        }
    }
    Ok(m.files.len())
}

/// A file's hashes as the hub reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct HubHashes {
    /// sha256 of LFS files.
    pub sha256: Option<String>,
    /// git blob id (sha1) of every file.
    pub blob_id: Option<String>,
}

/// Parses the `siblings` of the hub's model info (`?blobs=true`).
pub fn parse_hub_hashes(info: &serde_json::Value) -> BTreeMap<String, HubHashes> {
    let mut out = BTreeMap::new();
    for s in info
        .get("siblings")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        let Some(name) = s.get("rfilename").and_then(|v| v.as_str()) else {
            continue;
        };
        let sha256 = s
            .get("lfs")
            .and_then(|l| l.get("sha256"))
            .and_then(|v| v.as_str())
            .map(String::from);
        let blob_id = s.get("blobId").and_then(|v| v.as_str()).map(String::from);
        out.insert(name.to_string(), HubHashes { sha256, blob_id });
    }
    out
}

/// Checks downloaded files against the hub's hashes.
pub fn verify_against_hub(
    dir: &Path,
    files: &[String],
    hub: &BTreeMap<String, HubHashes>,
) -> Result<()> {
    for f in files {
        let Some(want) = hub.get(f) else {
            return Err(ModelError::Weights {
                file: dir.join(f).display().to_string(),
                msg: "the hub does not list this file at this revision".into(),
            });
        };
        let (sha256, blob, _) = digests(&dir.join(f))?;
        let ok = match (&want.sha256, &want.blob_id) {
            (Some(s), _) => *s == sha256,
            (None, Some(b)) => *b == blob,
            (None, None) => true,
        };
        if !ok {
            return Err(ModelError::Weights {
                file: dir.join(f).display().to_string(),
                msg: "does not match the hub's hash: the download is corrupt; delete it from the cache and retry".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("w.safetensors"), vec![7u8; 3000]).unwrap();
        let files = vec!["a.json".to_string(), "w.safetensors".to_string()];
        write_manifest(dir.path(), &files).unwrap();
        assert_eq!(verify_manifest(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join("w.safetensors"), vec![8u8; 3000]).unwrap();
        let e = verify_manifest(dir.path()).unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("manifest"), "{e}");
    }

    #[test]
    fn hub_hashes_check_lfs_sha256_and_git_blob_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"hello\n").unwrap();
        std::fs::write(dir.path().join("m.safetensors"), b"abc").unwrap();
        let info = serde_json::json!({"siblings": [
            // `git hash-object` of "hello\n".
            {"rfilename": "config.json", "blobId": "ce013625030ba8dba906f756967f9e9ca394464a"},
            {"rfilename": "m.safetensors", "blobId": "x", "lfs": {"sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "size": 3}},
        ]});
        let hub = parse_hub_hashes(&info);
        let files = vec!["config.json".to_string(), "m.safetensors".to_string()];
        verify_against_hub(dir.path(), &files, &hub).unwrap();
        std::fs::write(dir.path().join("m.safetensors"), b"abd").unwrap();
        assert!(verify_against_hub(dir.path(), &files, &hub)
            .unwrap_err()
            .to_string()
            .contains("corrupt"));
    }
}
