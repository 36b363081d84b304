//! Progress of long work, reported to an observer the caller supplies: the library draws
//! nothing; the command line renders it as a bar on a terminal and as lines elsewhere.

/// An observer of long work. `advance(n)` is called, from any thread, each time `n` more steps
/// of the work it was handed to are done (training steps, examples, grid points).
pub trait Progress: Sync {
    /// `steps` more steps are done.
    fn advance(&self, steps: u64);
}
