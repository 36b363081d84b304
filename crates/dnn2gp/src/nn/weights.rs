//! Parameters as PyTorch `state_dict` tensors in safetensors files: `"<index>.weight"`,
//! `"<index>.bias"` with the layer's index in the equivalent `nn.Sequential`, weights of
//! shape `[out, in]` (dense) or `[out, in, k, k]` (conv). Files written by
//! `safetensors.torch.save_file(model.state_dict(), path)` load directly (f32 or f64), and
//! ours load back into PyTorch with `model.load_state_dict(load_file(path))`.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::{Layer, Sequential};
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// One tensor of the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamTensor {
    /// `state_dict` key.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Offset in the flat vector.
    pub offset: usize,
}

impl ParamTensor {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Weight and bias tensors of a layer at `index` whose weight has `shape`, from `offset`.
fn pair(index: usize, shape: Vec<usize>, offset: usize) -> [ParamTensor; 2] {
    let n: usize = shape.iter().product();
    let out = shape[0];
    [
        ParamTensor {
            name: format!("{index}.weight"),
            shape,
            offset,
        },
        ParamTensor {
            name: format!("{index}.bias"),
            shape: vec![out],
            offset: offset + n,
        },
    ]
}

impl Sequential {
    /// Tensors keyed by layer index (the layer list mirrors `nn.Sequential`, flatten included).
    pub fn param_layout(&self) -> Vec<ParamTensor> {
        let mut off = 0;
        let mut out = Vec::new();
        for (index, l) in self.layers().iter().enumerate() {
            let shape = match *l {
                Layer::Dense { inputs, outputs } => vec![outputs, inputs],
                Layer::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    ..
                } => vec![out_channels, in_channels, kernel, kernel],
                _ => continue,
            };
            out.extend(pair(index, shape, off));
            off += l.n_params();
        }
        out
    }
}

/// Floating-point width of a saved file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    /// float32 (PyTorch's default).
    F32,
    /// float64.
    F64,
}

/// Writes `w` (laid out as `layout`) to a safetensors file, atomically.
pub fn save(path: &Path, layout: &[ParamTensor], w: &[f64], dtype: StoredDtype) -> Result<()> {
    save_with_metadata(path, layout, w, dtype, &BTreeMap::new())
}

/// [`save`] with string `metadata` in the file's `__metadata__` header (beside `format: pt`).
pub fn save_with_metadata(
    path: &Path,
    layout: &[ParamTensor],
    w: &[f64],
    dtype: StoredDtype,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = layout
        .iter()
        .map(|t| {
            let vals = &w[t.offset..t.offset + t.len()];
            match dtype {
                StoredDtype::F32 => vals
                    .iter()
                    .flat_map(|v| (*v as f32).to_le_bytes())
                    .collect(),
                StoredDtype::F64 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            }
        })
        .collect();
    let dtype = match dtype {
        StoredDtype::F32 => Dtype::F32,
        StoredDtype::F64 => Dtype::F64,
    };
    let views: BTreeMap<String, TensorView<'_>> = layout
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            Ok((
                t.name.clone(),
                TensorView::new(dtype, t.shape.clone(), b).map_err(|e| {
                    Error::tensor(path.display().to_string(), &t.name, e.to_string())
                })?,
            ))
        })
        .collect::<Result<_>>()?;
    let meta = metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([("format".to_string(), "pt".to_string())]);
    let mut out = safetensors::tensor::serialize(views, Some(meta.collect()))
        .map_err(|e| Error::Invalid(format!("{}: cannot serialise: {e}", path.display())))?;
    canonical_header(&mut out);
    write_atomic(path, &out)
}

/// Rewrites a safetensors file's JSON header with its keys sorted (the same characters in
/// another order, so no offset moves): the serialiser writes its metadata map in hash order,
/// and the same model must give the same bytes.
fn canonical_header(bytes: &mut [u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &bytes[8..8 + n];
    let text = String::from_utf8_lossy(header);
    let trimmed = text.trim_end();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) {
        // serde_json's map is ordered by key.
        if let Ok(sorted) = serde_json::to_string(&value) {
            if sorted.len() == trimmed.len() {
                bytes[8..8 + sorted.len()].copy_from_slice(sorted.as_bytes());
            }
        }
    }
}

/// The `__metadata__` of a safetensors file, from its header alone (the tensors are not read).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let bad = |msg: String| Error::parse(path, 1, format!("not a safetensors file: {msg}"));
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than its header's length".into()))?;
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if n > size.saturating_sub(8) || n > 100 << 20 {
        return Err(bad(format!("a header of {n} bytes in a file of {size}")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    Ok(value
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

/// Reads a safetensors file into a flat vector laid out as `layout`; refuses missing or extra
/// keys, wrong shapes and dtypes other than f32 and f64, naming the key.
pub fn load(path: &Path, layout: &[ParamTensor]) -> Result<Vec<f64>> {
    Ok(load_with_metadata(path, |_| Ok(layout.to_vec()))?.1)
}

/// The file's `__metadata__` and its parameters, laid out as `layout_of(metadata)` says (the
/// architecture may be named in the metadata itself); the checks of [`load`].
pub fn load_with_metadata(
    path: &Path,
    layout_of: impl FnOnce(&BTreeMap<String, String>) -> Result<Vec<ParamTensor>>,
) -> Result<(BTreeMap<String, String>, Vec<f64>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, &path.display().to_string(), layout_of)
}

/// [`load_with_metadata`] of safetensors bytes held in memory (a `state_dict` handed over by
/// a caller), errors prefixed with `what`.
pub fn from_bytes(
    bytes: &[u8],
    what: &str,
    layout_of: impl FnOnce(&BTreeMap<String, String>) -> Result<Vec<ParamTensor>>,
) -> Result<(BTreeMap<String, String>, Vec<f64>)> {
    let bad = |msg: String| Error::Invalid(format!("{what}: {msg}"));
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let layout = layout_of(&metadata)?;
    let layout = layout.as_slice();
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let expected: Vec<&str> = layout.iter().map(|t| t.name.as_str()).collect();
    let mut extra: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !expected.contains(n))
        .collect();
    if !extra.is_empty() {
        extra.sort_unstable();
        return Err(Error::tensor(
            what,
            extra[0],
            format!(
                "unexpected for this architecture (extra tensors {extra:?}; expected {expected:?})"
            ),
        ));
    }
    let total = layout.iter().map(ParamTensor::len).sum();
    let mut w = vec![0.0; total];
    for t in layout {
        let view = st
            .tensor(&t.name)
            .map_err(|_| Error::tensor(what, &t.name, format!("missing (shape {:?})", t.shape)))?;
        if view.shape() != t.shape.as_slice() {
            return Err(Error::tensor(
                what,
                &t.name,
                format!(
                    "shape {:?}, the architecture needs {:?}",
                    view.shape(),
                    t.shape
                ),
            ));
        }
        let dst = &mut w[t.offset..t.offset + t.len()];
        match view.dtype() {
            Dtype::F64 => dst
                .iter_mut()
                .zip(view.data().chunks_exact(8))
                .for_each(|(d, c)| *d = f64::from_le_bytes(c.try_into().expect("8 bytes"))),
            Dtype::F32 => dst
                .iter_mut()
                .zip(view.data().chunks_exact(4))
                .for_each(|(d, c)| *d = f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64),
            other => {
                return Err(Error::tensor(
                    what,
                    &t.name,
                    format!("dtype {other:?}; expected F32 or F64"),
                ))
            }
        }
        if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(
                what,
                &t.name,
                format!("a non-finite value at flat index {i}"),
            ));
        }
    }
    Ok((metadata, w))
}
