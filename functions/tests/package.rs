//! What the Functions host reads from the package agrees with the code: the executable in
//! `host.json`, the splitter's trigger binding, no stitch trigger left in the app, the aggregator
//! container running this binary's `aggregate` mode on `stitch`, and the handler's dependencies
//! (no Candle, so the cold start stays small).

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

fn text(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn bindings_match_the_handler() {
    let splitter = json("splitter/function.json");
    let trigger = &splitter["bindings"][0];
    assert_eq!(trigger["type"], "eventGridTrigger");
    assert_eq!(trigger["direction"], "in");
    assert_eq!(trigger["name"], stylefleet_functions::splitter::BINDING);
    // The Event Grid subscription targets the function by its folder name.
    assert!(text("../infra/modules/events.bicep").contains("/functions/splitter'"));
}

/// The splitter is the only function: the aggregator consumes `stitch` itself (a custom handler
/// cannot dead-letter a message), so nothing may still route stitch messages through the host.
#[test]
fn the_app_has_no_stitch_trigger() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let functions: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(functions, vec!["splitter".to_owned()]);
    let host = json("host.json");
    assert!(
        host["extensions"]["serviceBus"].is_null(),
        "host.json still configures a Service Bus trigger: {host}"
    );
    let app = text("../infra/modules/functions.bicep");
    assert!(
        !app.contains("ServiceBusConnection"),
        "functions.bicep still configures a Service Bus trigger connection"
    );
    assert!(
        !text("Dockerfile").contains("functions/aggregator"),
        "the package still carries an aggregator function"
    );
}

/// The aggregator container runs this binary's `aggregate` mode on the `stitch` queue, with the
/// queue's own max delivery count, so that its last attempt fails the job with the reason.
#[test]
fn the_aggregator_container_runs_the_stitch_consumer() {
    let dockerfile = text("Dockerfile");
    assert!(dockerfile.contains("AS aggregator"), "no aggregator stage");
    assert!(dockerfile.contains(&format!(
        "ENTRYPOINT [\"/opt/stylefleet/{}\"]",
        env!("CARGO_PKG_NAME")
    )));
    assert!(dockerfile.contains("CMD [\"aggregate\"]"));

    let app = text("../infra/modules/aggregator.bicep");
    assert!(
        app.contains("'aggregate'"),
        "the app does not pass the aggregate mode"
    );
    assert!(app.contains(&format!("queueName: '{}'", stylefleet::queue::STITCH)));
    assert!(app.contains("value: string(stitchMaxDeliveries)"));
    assert!(
        text("../infra/main.bicep")
            .contains("stitchMaxDeliveries: serviceBus.outputs.stitchMaxDeliveries"),
        "main.bicep does not pass the stitch queue's max delivery count to the aggregator"
    );
    let bus = text("../infra/modules/servicebus.bicep");
    assert!(bus.contains("maxDeliveryCount: stitchMaxDeliveries"));
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
