//! Progress of long work as a tqdm-like line on Python's `sys.stderr` (where a notebook shows
//! it): `fit: 45%|████▌     | 27000/60000 examples [00:12<00:14]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dnn2gp::progress::Progress;
use pyo3::prelude::*;

/// How often the line is redrawn.
const EVERY: Duration = Duration::from_millis(200);

/// A progress line of `total` steps of `unit`, drawn from any thread (each draw takes the GIL
/// for a moment; the computation runs without it).
pub(crate) struct Line {
    what: String,
    unit: &'static str,
    total: u64,
    done: AtomicU64,
    start: Instant,
    last: Mutex<Option<Instant>>,
}

impl Line {
    /// A line for `total` steps, or none when not asked for.
    pub(crate) fn new(on: bool, what: &str, unit: &'static str, total: u64) -> Option<Self> {
        on.then(|| Line {
            what: what.to_string(),
            unit,
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
            last: Mutex::new(None),
        })
    }

    /// `what: 45%|████▌     | 27000/60000 unit [mm:ss<mm:ss]`.
    fn text(&self, done: u64) -> String {
        let frac = if self.total == 0 {
            1.0
        } else {
            (done as f64 / self.total as f64).min(1.0)
        };
        let width = 20;
        let eighths = (frac * (width * 8) as f64).round() as usize;
        let mut bar = "█".repeat(eighths / 8);
        if !eighths.is_multiple_of(8) {
            bar.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
        }
        let pad = width - bar.chars().count();
        let elapsed = self.start.elapsed().as_secs_f64();
        let left = if frac > 0.0 {
            elapsed * (1.0 - frac) / frac
        } else {
            0.0
        };
        let clock = |s: f64| format!("{:02}:{:02}", (s / 60.0) as u64, s as u64 % 60);
        format!(
            "\r{}: {:3.0}%|{bar}{}| {done}/{} {} [{}<{}]",
            self.what,
            100.0 * frac,
            " ".repeat(pad),
            self.total,
            self.unit,
            clock(elapsed),
            clock(left)
        )
    }

    fn write(&self, text: &str) {
        Python::attach(|py| {
            if let Ok(err) = py.import("sys").and_then(|s| s.getattr("stderr")) {
                let _ = err.call_method1("write", (text,));
                let _ = err.call_method0("flush");
            }
        });
    }

    /// The final line, with a newline.
    pub(crate) fn finish(&self) {
        let done = self.done.load(Ordering::Relaxed);
        self.write(&format!("{}\n", self.text(done)));
    }
}

impl Progress for Line {
    fn advance(&self, steps: u64) {
        let done = self.done.fetch_add(steps, Ordering::Relaxed) + steps;
        let Ok(mut last) = self.last.try_lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.write(&self.text(done));
    }
}

/// `f` with the line as its progress observer, the line finished after it.
pub(crate) fn with_line<R>(line: &Option<Line>, f: impl FnOnce(Option<&dyn Progress>) -> R) -> R {
    let out = f(line.as_ref().map(|l| l as &dyn Progress));
    if let Some(l) = line {
        l.finish();
    }
    out
}
