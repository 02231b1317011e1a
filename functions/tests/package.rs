//! What the Functions host reads from the package agrees with the code: the executable in
//! `host.json`, each function's trigger binding (name, queue, connection), and the handler's
//! dependencies (no Candle, so the cold start stays small).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn json(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn host_json_runs_this_handler() {
    let host = json("host.json");
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        env!("CARGO_PKG_NAME"),
        "the host must start the binary this package builds"
    );
    // The handler answers the trigger itself; HTTP forwarding is for HTTP-only apps.
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
    assert!(host["extensionBundle"]["id"].is_string());
}

#[test]
fn bindings_match_the_handler() {
    let splitter = json("splitter/function.json");
    let trigger = &splitter["bindings"][0];
    assert_eq!(trigger["type"], "eventGridTrigger");
    assert_eq!(trigger["direction"], "in");
    assert_eq!(trigger["name"], stylefleet_functions::splitter::BINDING);

    let aggregator = json("aggregator/function.json");
    let trigger = &aggregator["bindings"][0];
    assert_eq!(trigger["type"], "serviceBusTrigger");
    assert_eq!(trigger["name"], stylefleet_functions::aggregator::BINDING);
    assert_eq!(trigger["queueName"], stylefleet::queue::STITCH);
    // The app settings that carry this connection (managed identity) are set by the template.
    let connection = trigger["connection"].as_str().unwrap();
    let bicep = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/modules/functions.bicep"),
    )
    .unwrap();
    assert!(
        bicep.contains(&format!("{connection}__fullyQualifiedNamespace")),
        "functions.bicep does not configure the {connection} connection"
    );
    // The Event Grid subscription targets the function by its folder name.
    let events = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/modules/events.bicep"),
    )
    .unwrap();
    assert!(events.contains("/functions/splitter'"));
}

#[test]
fn the_handler_does_not_link_candle() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            env!("CARGO_PKG_NAME"),
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("stylefleet v"),
        "unexpected cargo tree output:\n{tree}"
    );
    let candle: Vec<&str> = tree.lines().filter(|l| l.contains("candle")).collect();
    assert!(candle.is_empty(), "the handler links Candle: {candle:?}");
}
