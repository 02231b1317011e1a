//! The Azure Functions custom handler protocol: the host POSTs `{"Data": {..}, "Metadata": {..}}` to
//! `/<function name>`, `Data` holding one entry per input binding (the trigger's payload under the
//! binding's name from `function.json`), and expects `{"Outputs": {..}, "Logs": [..],
//! "ReturnValue": ..}` back. A 2xx answer means the invocation succeeded; anything else fails it,
//! which makes Event Grid retry the event. That 2xx-or-not is all a handler can say about its
//! trigger, which is why the aggregator is not a function (see [`crate::aggregator`]).

use serde::Serialize;
use serde_json::{Map, Value};

/// Why a request was refused (answered 400, nothing done).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not JSON.
    #[error("the request body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an invocation request.
    #[error("the request is not an invocation: {0}")]
    NotInvocation(String),
    /// The trigger binding is missing from `Data`.
    #[error("Data has no {binding:?} entry (the trigger binding); it has {found:?}")]
    MissingBinding {
        /// The binding looked for.
        binding: String,
        /// The entries present.
        found: Vec<String>,
    },
    /// The trigger payload is not what the trigger delivers.
    #[error("the {binding:?} payload is malformed: {reason}")]
    Payload {
        /// The binding.
        binding: String,
        /// What is wrong.
        reason: String,
    },
}

/// One invocation from the Functions host.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Input binding name -> payload.
    pub data: Map<String, Value>,
    /// Trigger metadata (`sys`, and per trigger type: Service Bus sends `MessageId`,
    /// `DeliveryCount`, ...).
    pub metadata: Map<String, Value>,
}

impl Invocation {
    /// Parses a request body.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(RequestError::NotInvocation(
                "expected a JSON object with Data and Metadata".into(),
            ));
        };
        let data = match top.remove("Data") {
            Some(Value::Object(data)) => data,
            Some(other) => {
                return Err(RequestError::NotInvocation(format!(
                    "Data must be an object, got {}",
                    kind(&other)
                )));
            }
            None => return Err(RequestError::NotInvocation("Data is missing".into())),
        };
        let metadata = match top.remove("Metadata") {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => Map::new(),
            Some(other) => {
                return Err(RequestError::NotInvocation(format!(
                    "Metadata must be an object, got {}",
                    kind(&other)
                )));
            }
        };
        Ok(Self { data, metadata })
    }

    /// The trigger's payload: the entry named `binding`, or the only entry when there is one (a
    /// renamed binding still works).
    pub fn trigger(&self, binding: &str) -> Result<&Value, RequestError> {
        if let Some(v) = self.data.get(binding) {
            return Ok(v);
        }
        let mut values = self.data.values();
        match (values.next(), values.next()) {
            (Some(only), None) => Ok(only),
            _ => Err(RequestError::MissingBinding {
                binding: binding.to_owned(),
                found: self.data.keys().cloned().collect(),
            }),
        }
    }

    /// A metadata entry as text (the host sends some numbers as strings).
    pub fn metadata_str(&self, key: &str) -> Option<String> {
        match self.metadata.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// The JSON type of a value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The answer to the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InvocationResponse {
    /// Output bindings (none here: the stages write through their own clients).
    #[serde(rename = "Outputs")]
    pub outputs: Map<String, Value>,
    /// Lines the host adds to the invocation's log.
    #[serde(rename = "Logs")]
    pub logs: Vec<String>,
    /// What the function returns: a summary of what it did, or the validation handshake.
    #[serde(rename = "ReturnValue")]
    pub return_value: Value,
}

impl InvocationResponse {
    /// Adds a log line (and traces it).
    pub fn log(&mut self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!("{line}");
        self.logs.push(line);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_envelope() {
        let body = json!({"Data": {"event": {"id": "1"}}, "Metadata": {"DeliveryCount": "3"}});
        let inv = Invocation::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(inv.trigger("event").unwrap()["id"], "1");
        assert_eq!(inv.trigger("renamed").unwrap()["id"], "1");
        assert_eq!(inv.metadata_str("DeliveryCount").as_deref(), Some("3"));
        assert_eq!(inv.metadata_str("Missing"), None);
    }

    #[test]
    fn refuses_what_is_not_an_envelope() {
        assert!(matches!(
            Invocation::parse(b"{not json"),
            Err(RequestError::NotJson(_))
        ));
        let err = Invocation::parse(br#"{"Metadata": {}}"#).unwrap_err();
        assert!(err.to_string().contains("Data is missing"), "{err}");
        assert!(matches!(
            Invocation::parse(br#"{"Data": [1]}"#),
            Err(RequestError::NotInvocation(_))
        ));
        assert!(matches!(
            Invocation::parse(b"[]"),
            Err(RequestError::NotInvocation(_))
        ));
        let two = Invocation::parse(br#"{"Data": {"a": 1, "b": 2}}"#).unwrap();
        let err = two.trigger("event").unwrap_err();
        assert!(err.to_string().contains("\"event\""), "{err}");
        let none = Invocation::parse(br#"{"Data": {}}"#).unwrap();
        assert!(none.trigger("event").is_err());
    }

    #[test]
    fn answers_in_the_hosts_field_names() {
        let mut r = InvocationResponse::default();
        r.log("hello");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({"Outputs": {}, "Logs": ["hello"], "ReturnValue": null})
        );
    }
}
