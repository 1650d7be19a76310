//! Printing to stdout that ends quietly when the reader has gone (`dramaq plan | head`).
//!
//! `println!` panics when stdout is a closed pipe, which prints a backtrace for what is an
//! ordinary way to use a command-line tool. These macros end the process as a tool killed by
//! `SIGPIPE` would (exit status 141), and any other write error with a one-line message.
//! The signal itself stays ignored: the process also writes to sockets, and a peer closing one
//! must be an error to handle, never a silent death.

use std::io::Write;

/// `println!` for the CLI's output.
macro_rules! outln {
    () => {
        $crate::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the CLI's output.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}
