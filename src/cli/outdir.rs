//! Output folders. Each is checked before any work, locked while a run uses it, and filled in a
//! staging sibling that is renamed into place only when the run has written everything: the
//! folder holds either one run's complete set of files or its previous contents. A run killed
//! with SIGKILL leaves its staging folder behind; the next run on the same `--out` removes it.
//! SIGINT, SIGTERM and SIGHUP remove it at once and say what was kept.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use dnn2gp::{Error, Result};

/// The file marking a folder as written by dnn2gp; it lists the run's files.
pub const MARKER: &str = ".dnn2gp-run.json";

/// The run in progress, for the signal handler: (staging folder, lock file, target).
static ACTIVE: Mutex<Option<(PathBuf, PathBuf, PathBuf)>> = Mutex::new(None);

/// An output folder in use: files go to [`OutDir::path`] until [`OutDir::commit`].
#[derive(Debug)]
pub struct OutDir {
    target: PathBuf,
    staging: PathBuf,
    lock_path: PathBuf,
    lock: Option<File>,
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

impl OutDir {
    /// Checks `target` (named by `option`) and takes it: refuses a file, a folder dnn2gp did
    /// not write, a folder that holds one of `inputs`, a folder another run holds, and a place
    /// that cannot be written. Removes what killed runs left, then creates the staging folder.
    pub fn open(option: &str, target: &Path, inputs: &[&Path]) -> Result<Self> {
        let shown = target.display();
        if target.as_os_str().is_empty() {
            return Err(invalid(format!("{option} is empty; name a folder")));
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != "..")
            .ok_or_else(|| invalid(format!("{option} {shown}: name a folder, not '.' or '..'")))?;
        if target.exists() {
            if !target.is_dir() {
                return Err(invalid(format!(
                    "{option} {shown} is a file; {option} names a folder"
                )));
            }
            let mut entries = std::fs::read_dir(target).map_err(|e| Error::io(target, e))?;
            if entries.next().is_some() && !target.join(MARKER).exists() {
                return Err(invalid(format!(
                    "{option} {shown} holds files no dnn2gp run recorded ({MARKER} is missing; \
                     folders from versions before it have none either), and a run replaces the \
                     whole folder: choose a new or empty folder, or remove this one"
                )));
            }
            let full = target.canonicalize().map_err(|e| Error::io(target, e))?;
            for input in inputs {
                if let Ok(i) = input.canonicalize() {
                    if i.starts_with(&full) {
                        return Err(invalid(format!(
                            "{option} {shown} holds the input {}, and a run replaces the whole \
                             folder; choose another {option}",
                            input.display()
                        )));
                    }
                }
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let lock_path = parent.join(format!(".{name}.lock"));
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(invalid(format!(
                    "{option} {shown} is in use by another dnn2gp run (lock {}); wait for it to \
                     finish or choose another {option}",
                    lock_path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        remove_leftovers(&parent, &name)?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        std::fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))?;
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((staging.clone(), lock_path.clone(), target.to_path_buf()));
        Ok(OutDir {
            target: target.to_path_buf(),
            staging,
            lock_path,
            lock: Some(lock),
        })
    }

    /// Where this run writes its files until [`OutDir::commit`].
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// `file`, a path inside the staging folder, as it will be named once committed.
    pub fn shown(&self, file: &Path) -> PathBuf {
        file.strip_prefix(&self.staging)
            .map(|rel| self.target.join(rel))
            .unwrap_or_else(|_| file.to_path_buf())
    }

    /// Writes the marker (listing `files`) and puts the staging folder in place of the target;
    /// prints each file under its final name.
    pub fn commit(mut self, files: &[PathBuf]) -> anyhow::Result<()> {
        let listed: Vec<String> = files
            .iter()
            .filter_map(|f| f.strip_prefix(&self.staging).ok())
            .map(|f| f.display().to_string())
            .collect();
        dnn2gp::io::write_json(
            &self.staging.join(MARKER),
            &serde_json::json!({ "tool": "dnn2gp", "version": env!("CARGO_PKG_VERSION"),
                                 "files": listed }),
        )?;
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        if self.target.exists() {
            let old = self.staging.with_file_name(format!(
                ".{}.old-{}",
                self.target
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                std::process::id()
            ));
            std::fs::rename(&self.target, &old).map_err(|e| Error::io(&self.target, e))?;
            std::fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        } else {
            std::fs::rename(&self.staging, &self.target).map_err(|e| Error::io(&self.target, e))?;
        }
        *active = None;
        drop(active);
        for f in files {
            println!("wrote {}", self.shown(f).display());
        }
        self.release();
        Ok(())
    }

    fn release(&mut self) {
        if self.lock.take().is_some() {
            let _ = std::fs::remove_file(&self.lock_path);
        }
    }
}

impl Drop for OutDir {
    /// A run that did not commit leaves the target as it was.
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = std::fs::remove_dir_all(&self.staging);
            *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;
            self.release();
        }
    }
}

/// Removes the staging and old folders that killed runs left beside `name` (the caller holds
/// its lock, so none of them belongs to a live run).
fn remove_leftovers(parent: &Path, name: &str) -> Result<()> {
    let prefixes = [format!(".{name}.partial-"), format!(".{name}.old-")];
    for entry in std::fs::read_dir(parent).map_err(|e| Error::io(parent, e))? {
        let entry = entry.map_err(|e| Error::io(parent, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if prefixes.iter().any(|p| file.starts_with(p.as_str())) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            eprintln!("removed {}, left by a run that was killed", path.display());
        }
    }
    Ok(())
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler: removes the run's staging folder, says what was
/// kept, exits with 130.
pub fn install_signal_handler() {
    let _ = ctrlc::set_handler(|| {
        let active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner()).take();
        match active {
            Some((staging, lock, target)) => {
                let _ = std::fs::remove_dir_all(&staging);
                let _ = std::fs::remove_file(&lock);
                let kept = if target.exists() {
                    "keeps its previous contents"
                } else {
                    "was not created"
                };
                eprintln!(
                    "interrupted: nothing of this run was kept; {} {kept}",
                    target.display()
                );
            }
            None => eprintln!("interrupted"),
        }
        std::process::exit(130);
    });
}
