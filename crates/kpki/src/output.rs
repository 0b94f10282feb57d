//! Output formats shared by the commands.

/// How a command prints its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("JSON output: {e}"))?;
    println!("{text}");
    Ok(())
}

/// Prints `value` as YAML on stdout.
pub fn print_yaml<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text = serde_norway::to_string(value).map_err(|e| format!("YAML output: {e}"))?;
    print!("{text}");
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
