//! Output shared by the commands: the `-o` flag of the commands that print data, and every
//! write to stdout. A reader that went away (`kpki … | head -1`) ends the process the way it
//! ends `cat`: killed by SIGPIPE, silently; any other stdout failure is one error line and
//! exit 1.

use std::io::Write;

/// How a command prints its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The `-o/--output` flag, flattened into every command that prints data (and only those).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Format,
}

/// Writes formatted text to stdout, newline added: `println!` that ends quietly on a closed
/// pipe instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes formatted text to stdout: `print!` that ends quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

/// Writes `args` to stdout; a failure ends the process (see [`stdout_failed`]).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Flushes stdout before the process exits, so a late failure is reported like any other.
pub fn flush_stdout() {
    if let Err(e) = std::io::stdout().lock().flush() {
        stdout_failed(&e);
    }
}

/// Exit status of a process killed by SIGPIPE, as a shell reports it (128 + 13); used only if
/// the signal could not be delivered.
const SIGPIPE_STATUS: i32 = 128 + signal_hook::consts::SIGPIPE;

/// Ends the process after stdout failed: a closed pipe kills it with SIGPIPE (the default
/// disposition, which the Rust runtime replaces with "ignore"); anything else is reported.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
        std::process::exit(SIGPIPE_STATUS);
    }
    eprintln!("kpki: error: writing to stdout: {e}");
    std::process::exit(1);
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("JSON output: {e}"))?;
    outln!("{text}");
    Ok(())
}

/// Prints `value` as YAML on stdout.
pub fn print_yaml<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_norway::to_string(value).map_err(|e| format!("YAML output: {e}"))?;
    out!("{text}");
    Ok(())
}

/// Prints `value` as JSON or YAML; `text` prints it for `-o text`.
pub fn print_data<T: serde::Serialize>(
    format: Format,
    value: &T,
    text: impl FnOnce(),
) -> Result<(), String> {
    match format {
        Format::Json => print_json(value),
        Format::Yaml => print_yaml(value),
        Format::Text => {
            text();
            Ok(())
        }
    }
}
