//! Numeric CSV files (gzipped or not): comma-separated, an optional header row, the last column
//! is the target. Every error names the file and the line.

use std::path::Path;

use faer::Mat;

use super::Dataset;
use crate::error::{Error, Result};

/// Reads a numeric table; returns the rows. A first row that does not parse as numbers is
/// taken as a header.
pub fn read_table(path: &Path) -> Result<Vec<Vec<f64>>> {
    let bytes = super::read_maybe_gz(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        let col = 1 + at
            - bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
        Error::parse(
            path,
            line,
            format!(
                "byte {col} of the line (0x{:02x}) is not UTF-8 text",
                bytes[at]
            ),
        )
    })?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut width: Option<(usize, usize)> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Vec<std::result::Result<f64, _>> =
            fields.iter().map(|f| f.parse::<f64>()).collect();
        if rows.is_empty() && width.is_none() && parsed.iter().any(|p| p.is_err()) {
            // Header row.
            width = Some((fields.len(), line_no));
            continue;
        }
        if let Some((w, first)) = width {
            if fields.len() != w {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "{} columns, but line {first} has {w}{}",
                        fields.len(),
                        separator_hint(line)
                    ),
                ));
            }
        } else {
            width = Some((fields.len(), line_no));
        }
        let mut row = Vec::with_capacity(fields.len());
        for (c, (f, p)) in fields.iter().zip(parsed).enumerate() {
            let v = p.map_err(|_| {
                Error::parse(
                    path,
                    line_no,
                    format!(
                        "column {}: '{f}' is not a number{}",
                        c + 1,
                        separator_hint(line)
                    ),
                )
            })?;
            if !v.is_finite() {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "column {}: '{f}' is not a finite number (NaN or Inf)",
                        c + 1
                    ),
                ));
            }
            row.push(v);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(Error::parse(
            path,
            1,
            "no data rows (the file is empty or holds only a header)",
        ));
    }
    Ok(rows)
}

/// A hint for a line that looks separated by something other than commas.
fn separator_hint(line: &str) -> &'static str {
    if line.contains(';') {
        " (the line looks ';'-separated; dnn2gp reads comma-separated values)"
    } else if line.contains('\t') {
        " (the line looks tab-separated; dnn2gp reads comma-separated values)"
    } else {
        ""
    }
}

/// Reads a data set: all columns but the last are inputs, the last is the target.
pub fn read_dataset(path: &Path) -> Result<Dataset> {
    let rows = read_table(path)?;
    let w = rows[0].len();
    if w < 2 {
        return Err(Error::parse(
            path,
            1,
            "needs at least two columns: inputs, then the target",
        ));
    }
    let x = Mat::from_fn(rows.len(), w - 1, |i, j| rows[i][j]);
    let y = Mat::from_fn(rows.len(), 1, |i, _| rows[i][w - 1]);
    Dataset::new(x, y)
}
