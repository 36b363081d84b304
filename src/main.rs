//! The `dnn2gp` command-line tool: parses, calls the core library, renders.

mod cli;
mod fetch;
mod report;

fn main() -> std::process::ExitCode {
    // Output piped into a reader that stops early (`| head`) ends the program quietly, as it
    // does other command-line tools, instead of a panic on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default action of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
