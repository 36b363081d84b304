//! `data fetch`: download a data set into a cache folder, checksums checked.

use anyhow::Result;

use crate::cli::args::FetchCmd;
use crate::cli::ctx::Ctx;
use crate::fetch::{fetch_mnist, Fetched};
use dnn2gp::Error;

/// `data fetch`.
pub(crate) fn fetch(ctx: &Ctx, a: FetchCmd) -> Result<()> {
    if a.dataset != "mnist" {
        return Err(Error::option(
            "DATASET",
            format!("unknown data set '{}' (expected mnist)", a.dataset),
        )
        .into());
    }
    let dir = a.dir.unwrap_or_else(|| a.data_dir.join("mnist"));
    let fetched: Vec<Fetched> = fetch_mnist(&a.mirror, &dir, &mut |name| {
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
