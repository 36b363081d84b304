//! Progress on long work: a bar on a terminal; elsewhere (a log file, CI) one line at the start
//! and then at most one every [`LINE_EVERY`], with the elapsed time and the estimate of what is
//! left.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dnn2gp::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// The least time between two progress lines when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// A progress bar that renders the core's [`Progress`] reports.
#[derive(Debug, Clone)]
pub struct Bar(ProgressBar);

impl Progress for Bar {
    fn advance(&self, steps: u64) {
        self.0.inc(steps);
    }
}

impl std::ops::Deref for Bar {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

/// A progress bar of `len` steps named `msg` (of work that reports no steps when `len` is 0:
/// its name and the time elapsed): hidden when `quiet`.
pub fn bar(quiet: bool, len: u64, msg: &str) -> Bar {
    if quiet {
        return Bar(ProgressBar::hidden());
    }
    let (pb, template) = if std::io::stderr().is_terminal() {
        (
            ProgressBar::new(len),
            if len == 0 {
                "{msg:>12} ({elapsed})"
            } else {
                "{msg:>12} [{bar:40}] {pos}/{len} ({elapsed}, eta {eta})"
            },
        )
    } else {
        (
            ProgressBar::with_draw_target(
                Some(len),
                ProgressDrawTarget::term_like(Box::new(Lines::default())),
            ),
            if len == 0 {
                "{msg} ({elapsed} elapsed)"
            } else {
                "{msg}: {pos}/{len} ({elapsed} elapsed, eta {eta})"
            },
        )
    };
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    Bar(pb)
}

/// A terminal stand-in that writes each drawn state as a line on stderr, at most one per
/// [`LINE_EVERY`].
#[derive(Debug, Default)]
struct Lines {
    last: Mutex<Option<Instant>>,
}

impl TermLike for Lines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if !s.trim().is_empty() && last.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
            eprintln!("{}", s.trim_end());
            *last = Some(Instant::now());
        }
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}
