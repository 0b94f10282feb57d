//! Input files named on the command line: `-` means stdin wherever kpki reads a file.

use std::path::{Path, PathBuf};

/// The path to read for `arg`: stdin (`/dev/stdin`) for `-`, else `arg` itself.
pub fn path(arg: &Path) -> PathBuf {
    if is_stdin(arg) {
        PathBuf::from("/dev/stdin")
    } else {
        arg.to_path_buf()
    }
}

/// True when `arg` is `-`.
pub fn is_stdin(arg: &Path) -> bool {
    arg.as_os_str() == "-"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_is_stdin_and_nothing_else_is() {
        let cases = [
            ("-", "/dev/stdin"),
            ("./-", "./-"),
            ("--", "--"),
            ("a.crt", "a.crt"),
            ("/tmp/-x", "/tmp/-x"),
        ];
        for (arg, want) in cases {
            assert_eq!(path(Path::new(arg)), PathBuf::from(want), "{arg}");
        }
    }
}
