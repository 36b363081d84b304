//! `dnn2gp data fetch`: a data set's files from a mirror into a cache folder — MNIST's four IDX
//! files, or the 8×8 handwritten digits (`digits.csv`, as scikit-learn ships it). Each
//! download is kept only if the MD5 of its decompressed content is the canonical one, so a
//! truncated, corrupted or substituted file is refused and nothing is left behind.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use dnn2gp::data::gunzip_if_gz;
use dnn2gp::data::mnist::FILES;
use dnn2gp::error::{Error, Result};
use dnn2gp::io::write_atomic;

/// The mirror torchvision uses.
pub const MNIST_MIRROR: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";

/// MD5 of each decompressed file, in the order of [`FILES`].
pub const MNIST_MD5: [&str; 4] = [
    "6bbc9ace898e44ae57da46a324031adb",
    "a25bea736e30d166cdddb491f175f624",
    "2646ac647ad5339dbf082846283269ea",
    "27ae3e4e09519cfbb04c329615203637",
];

/// A data set to fetch: its files (fetched as `<name>.gz`) with the MD5 of their content, and
/// where they are served.
#[derive(Debug, Clone, Copy)]
pub struct DataSet {
    /// The folder name under the data directory (`mnist`, `digits`).
    pub folder: &'static str,
    /// Base URL of the default mirror, ending in `/`.
    pub mirror: &'static str,
    /// File names and the MD5 of each decompressed file.
    pub files: &'static [(&'static str, &'static str)],
}

/// MNIST, from the mirror torchvision uses.
pub const MNIST: DataSet = DataSet {
    folder: "mnist",
    mirror: MNIST_MIRROR,
    files: &[
        (FILES[0], MNIST_MD5[0]),
        (FILES[1], MNIST_MD5[1]),
        (FILES[2], MNIST_MD5[2]),
        (FILES[3], MNIST_MD5[3]),
    ],
};

/// The 8×8 handwritten digits (UCI optical digits, 1,797 images, 64 pixel values 0..16 and
/// the label per row), as scikit-learn ships them (BSD-3-Clause).
pub const DIGITS: DataSet = DataSet {
    folder: "digits",
    mirror:
        "https://raw.githubusercontent.com/scikit-learn/scikit-learn/1.3.0/sklearn/datasets/data/",
    files: &[("digits.csv", "a0339c30a8a5312a1b6f9e5c719dcce5")],
};

/// Largest download accepted (the training images are 9.9 MB gzipped).
const MAX_BYTES: u64 = 64 << 20;

/// One file of a fetch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fetched {
    /// Where it is.
    pub path: PathBuf,
    /// MD5 of the decompressed content.
    pub md5: String,
    /// Whether it was downloaded now (false: already in the cache and valid).
    pub downloaded: bool,
}

/// Hex MD5 of the content, decompressed if gzipped.
fn content_md5(raw: Vec<u8>) -> std::io::Result<String> {
    let data = gunzip_if_gz(raw)?;
    Ok(Md5::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Downloads `url` into memory.
fn download(url: &str) -> Result<Vec<u8>> {
    let fail = |msg: String| Error::Download {
        url: url.to_string(),
        msg,
    };
    let resp = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("reading the response failed: {e}")))?;
    Ok(bytes)
}

/// Fetches the files of `set` from `mirror` (a URL ending in `/`) into `dir` as `<name>.gz`,
/// skipping files already there with the right checksum. `on_file` is called with each file's
/// name before it is fetched. A failed fetch removes the folders it created (when empty).
pub fn fetch(
    set: &DataSet,
    mirror: &str,
    dir: &Path,
    on_file: &mut dyn FnMut(&str),
) -> Result<Vec<Fetched>> {
    // The folders this fetch creates, innermost first.
    let created: Vec<&Path> = dir
        .ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let fetched = fetch_into(set, mirror, dir, on_file);
    if fetched.is_err() {
        for folder in created {
            // Only an empty folder goes: a file fetched before the failure stays.
            let _ = std::fs::remove_dir(folder);
        }
    }
    fetched
}

/// [`fetch`] into the existing folder `dir`.
fn fetch_into(
    set: &DataSet,
    mirror: &str,
    dir: &Path,
    on_file: &mut dyn FnMut(&str),
) -> Result<Vec<Fetched>> {
    let base = if mirror.ends_with('/') {
        mirror.to_string()
    } else {
        format!("{mirror}/")
    };
    set.files
        .iter()
        .map(|&(name, want)| {
            let path = dir.join(format!("{name}.gz"));
            if let Ok(raw) = std::fs::read(&path) {
                if content_md5(raw).is_ok_and(|m| m == want) {
                    return Ok(Fetched {
                        path,
                        md5: want.to_string(),
                        downloaded: false,
                    });
                }
            }
            on_file(name);
            let url = format!("{base}{name}.gz");
            let raw = download(&url)?;
            let md5 = content_md5(raw.clone()).map_err(|e| Error::Download {
                url: url.clone(),
                msg: format!("not a valid gzip file ({e}); nothing was written"),
            })?;
            if md5 != want {
                return Err(Error::Download {
                    url,
                    msg: format!(
                        "checksum mismatch: the content's MD5 is {md5}, expected {want}; \
                         the file was not kept"
                    ),
                });
            }
            write_atomic(&path, &raw)?;
            Ok(Fetched {
                path,
                md5,
                downloaded: true,
            })
        })
        .collect()
}
