//! results/schema.json: generated from the result types (never typed), so
//! it must equal `fanout schema`'s output, and it must document every
//! field. That bench output validates against it is checked on every bench
//! the tests run (tests/bench.rs).

use std::process::Command;

use serde_json::Value;

fn committed() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/results/schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_committed_schema_is_what_fanout_schema_prints() {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        printed == committed(),
        "results/schema.json is stale: run `cargo run --release -- schema > results/schema.json`"
    );
}

/// Every property of every object, with its path.
fn properties<'a>(node: &'a Value, path: &str, out: &mut Vec<(String, &'a Value)>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = map.get("properties") {
                for (name, prop) in props {
                    out.push((format!("{path}.{name}"), prop));
                }
            }
            for (key, child) in map {
                properties(child, &format!("{path}/{key}"), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|c| properties(c, path, out)),
        _ => {}
    }
}

#[test]
fn every_field_is_documented() {
    let schema = committed();
    let mut all = Vec::new();
    properties(&schema, "", &mut all);
    assert!(all.len() > 100, "{} properties", all.len());
    let undocumented: Vec<&String> = all
        .iter()
        .filter(|(_, p)| {
            p.get("description")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .map(|(path, _)| path)
        .collect();
    assert!(undocumented.is_empty(), "no description: {undocumented:?}");
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let validator = jsonschema::validator_for(&committed()).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({})));
    assert!(!validator.is_valid(&serde_json::json!({"command": 3})));
}
