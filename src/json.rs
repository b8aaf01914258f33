//! Result files as JSON: every `--json` report and every file under
//! results/ is written the one way, with the path in any error.

use std::path::Path;

use anyhow::Context;

/// The command that made a result, as a user would type it: `fanout`
/// and the arguments (quoted where the shell needs it), whatever path the
/// binary ran from (`target/release/fanout`, a copy in /tmp). The revision
/// is recorded beside it.
pub fn command_line() -> String {
    let args = std::env::args().skip(1).map(|arg| shell_quoted(&arg));
    std::iter::once("fanout".to_string())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quoted(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_=.,:/@%+".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Write `value` to `path` as pretty-printed JSON.
pub fn write(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_the_shell_would_split_are_quoted() {
        assert_eq!(shell_quoted("--conns"), "--conns");
        assert_eq!(
            shell_quoted("ws://127.0.0.1:80/room"),
            "ws://127.0.0.1:80/room"
        );
        assert_eq!(
            shell_quoted("broadcast p95<=500ms"),
            "'broadcast p95<=500ms'"
        );
        assert_eq!(shell_quoted("it's"), "'it'\\''s'");
        assert_eq!(shell_quoted(""), "''");
        assert!(command_line().starts_with("fanout"));
    }
}
