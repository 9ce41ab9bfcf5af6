//! Writing the CLI's output: a reader that went away (`cube status | head -1`) ends the command
//! quietly and successfully, as it does for other Unix tools, instead of a panic.

use std::io::Write as _;

/// Writes `text` to stdout. If stdout is closed (a broken pipe), the command has nothing more to
/// say to anyone: it exits at once with status 0 and writes nothing to stderr.
pub fn write_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// `println!` for the CLI's output: see [`write_stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the CLI's output: see [`write_stdout`].
#[macro_export]
macro_rules! out_raw {
    ($($arg:tt)*) => {
        $crate::cli::output::write_stdout(&format!($($arg)*))
    };
}
