//! Safetensors checkpoints: one file or a sharded set with its index, validated
//! up front so that a truncated file or a missing or misshapen tensor is reported
//! with the file and tensor names, never as a panic deep in the model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::{ModelError, Result};

/// Where each tensor lives, and its stored shape and dtype.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    shape: Vec<usize>,
}

/// A validated set of safetensors files, memory-mapped.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    entries: HashMap<String, Entry>,
    mmaped: MmapedSafetensors,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("files", &self.files)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// The safetensors files of a checkpoint folder: from `model.safetensors.index.json`
/// when present, else `model.safetensors`, else every `*.safetensors` file.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        return files_from_index(dir, &index);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(ModelError::Weights {
            file: dir.display().to_string(),
            msg: "no model.safetensors, no model.safetensors.index.json and no *.safetensors file"
                .into(),
        });
    }
    Ok(found)
}

/// The shard file names a `model.safetensors.index.json` lists, each once.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| io_err(index, e))?;
    let bad = |msg: String| ModelError::Weights {
        file: index.display().to_string(),
        msg,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no weight_map object".into()))?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    names.sort_unstable();
    names.dedup();
    if let Some(name) = names
        .iter()
        .find(|n| n.contains('/') || n.contains('\\') || n.contains(".."))
    {
        return Err(bad(format!(
            "shard name {name:?} leaves the checkpoint folder"
        )));
    }
    Ok(names)
}

fn files_from_index(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    shard_names(index)?
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            if path.exists() {
                Ok(path)
            } else {
                Err(ModelError::Weights {
                    file: index.display().to_string(),
                    msg: format!("shard {name} is listed but missing"),
                })
            }
        })
        .collect()
}

fn io_err(path: &Path, e: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    }
}

/// Reads and checks one file's header against its length (catches truncation).
fn scan_file(path: &Path) -> Result<Vec<(String, Vec<usize>)>> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    // SAFETY: the file is opened read-only and not modified while mapped.
    let mmap = unsafe { memmap_file(&file) }.map_err(|e| io_err(path, e))?;
    let tensors =
        safetensors::SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Weights {
            file: path.display().to_string(),
            msg: format!("not a valid safetensors file (truncated or corrupt?): {e}"),
        })?;
    Ok(tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect())
}

unsafe fn memmap_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    memmap2::MmapOptions::new().map(file)
}

impl Checkpoint {
    /// Opens and validates every safetensors file of `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let files = checkpoint_files(dir)?;
        let mut entries = HashMap::new();
        for (i, path) in files.iter().enumerate() {
            for (name, shape) in scan_file(path)? {
                entries.insert(name, Entry { file: i, shape });
            }
        }
        // SAFETY: as in scan_file; the files were validated just above.
        let mmaped = unsafe { MmapedSafetensors::multi(&files) }?;
        Ok(Self {
            files,
            entries,
            mmaped,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn file_name(&self, entry: &Entry) -> String {
        self.files[entry.file]
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Loads `name`, checking its shape, converted to `dtype` on `device`.
    pub fn load(
        &self,
        name: &str,
        shape: Option<&Shape>,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "tensor {name} is missing from the checkpoint ({})",
                self.files
                    .iter()
                    .filter_map(|f| f.file_name())
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if let Some(shape) = shape {
            if shape.dims() != entry.shape.as_slice() {
                return Err(candle_core::Error::Msg(format!(
                    "tensor {name} in {} has shape {:?}, the config implies {:?}",
                    self.file_name(entry),
                    entry.shape,
                    shape.dims()
                )));
            }
        }
        let t = self.mmaped.load(name, &Device::Cpu).map_err(|e| {
            candle_core::Error::Msg(format!("tensor {name} in {}: {e}", self.file_name(entry)))
        })?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {}
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "tensor {name} in {} is {other:?}; expected f32, f16 or bf16",
                    self.file_name(entry)
                )))
            }
        }
        t.to_dtype(dtype)?.to_device(device)
    }

    /// A VarBuilder over this checkpoint whose errors name the file and tensor.
    pub fn var_builder(
        self: std::sync::Arc<Self>,
        dtype: DType,
        device: &Device,
    ) -> VarBuilder<'static> {
        let backend: Box<dyn SimpleBackend> = Box::new(CheckedBackend(self));
        VarBuilder::from_backend(backend, dtype, device.clone())
    }
}

struct CheckedBackend(std::sync::Arc<Checkpoint>);

impl SimpleBackend for CheckedBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.load(name, Some(&s), dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.load(name, None, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}
