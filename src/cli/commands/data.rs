//! `data fetch`: download a data set into a cache folder, checksums checked.

use anyhow::Result;

use crate::cli::args::{DataSetName, FetchCmd};
use crate::cli::ctx::Ctx;
use crate::fetch::{fetch as download, Fetched, DIGITS, MNIST};

/// `data fetch`.
pub(crate) fn fetch(ctx: &Ctx, a: FetchCmd) -> Result<()> {
    let set = match a.dataset {
        DataSetName::Mnist => &MNIST,
        DataSetName::Digits => &DIGITS,
    };
    let dir = a.dir.unwrap_or_else(|| a.data_dir.join(set.folder));
    let mirror = a.mirror.as_deref().unwrap_or(set.mirror);
    let fetched: Vec<Fetched> = download(set, mirror, &dir, &mut |name| {
        if !ctx.quiet {
            eprintln!("downloading {name}.gz");
        }
    })?;
    for f in &fetched {
        println!(
            "{} {} ({})",
            f.md5,
            f.path.display(),
            if f.downloaded {
                "downloaded"
            } else {
                "already there"
            }
        );
    }
    Ok(())
}
