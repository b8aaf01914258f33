//! Result files as JSON: every `--json` report and every file under
//! results/ is written the one way, with the path in any error.

use std::path::Path;

use anyhow::Context;

/// Write `value` to `path` as pretty-printed JSON.
pub fn write(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(value)?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}
