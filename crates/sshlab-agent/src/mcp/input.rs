//! 2026-07-28 multi round-trip requests (SEP-2322): a server may answer a request with an
//! `input_required` result that asks the client for input (an elicitation, a sampling call,
//! the roots list) before it completes. A load agent has no user or model, so a scenario
//! scripts the answers, one per method; the client sends the request again with them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::McpError;

/// Scripted answers to input requests, keyed by the request's method (`elicitation/create`,
/// `sampling/createMessage`, `roots/list`); each is sent as that request's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputResponses(pub BTreeMap<String, Value>);

/// Whether a result asks for input instead of completing.
pub(super) fn is_input_required(result: &Value) -> bool {
    result.get("resultType").and_then(Value::as_str) == Some("input_required")
}

impl InputResponses {
    /// The client capabilities these answers make good: `elicitation`, `sampling` and `roots`
    /// for scripted `elicitation/create`, `sampling/createMessage` and `roots/list` (a server
    /// should ask only for what a client declared); `{}` without a script.
    pub fn capabilities(&self) -> Value {
        let mut caps = Map::new();
        for (method, capability) in [
            ("elicitation/create", "elicitation"),
            ("sampling/createMessage", "sampling"),
            ("roots/list", "roots"),
        ] {
            if self.0.contains_key(method) {
                caps.insert(capability.into(), Value::Object(Map::new()));
            }
        }
        Value::Object(caps)
    }

    /// The params of the next round of a request that got `result` (`input_required`):
    /// `params` with `inputResponses` (one answer per input request, under the server's key)
    /// and the server's `requestState` verbatim, or without it when the server sent none.
    /// Fails with [`McpError::InputRequired`] when an input request has no scripted answer.
    pub(super) fn next_round(&self, params: Value, result: &Value) -> Result<Value, McpError> {
        let unanswered = || McpError::InputRequired {
            asks: input_asks(result),
        };
        let Some(Value::Object(requests)) = result.get("inputRequests") else {
            return Err(unanswered());
        };
        let mut answers = Map::new();
        for (key, request) in requests {
            let method = request.get("method").and_then(Value::as_str);
            let answer = method.and_then(|m| self.0.get(m)).ok_or_else(unanswered)?;
            answers.insert(key.clone(), answer.clone());
        }
        if answers.is_empty() {
            return Err(unanswered());
        }
        let mut params = match params {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        params.insert("inputResponses".into(), Value::Object(answers));
        match result.get("requestState") {
            Some(state) => params.insert("requestState".into(), state.clone()),
            None => params.remove("requestState"),
        };
        Ok(Value::Object(params))
    }
}

/// The methods an `input_required` result asks for (`inputRequests` is a map of requests
/// keyed by the server's names; an array is read too), sorted, or "unspecified input".
pub(super) fn input_asks(result: &Value) -> String {
    let requests: Vec<&Value> = match result.get("inputRequests") {
        Some(Value::Object(m)) => m.values().collect(),
        Some(Value::Array(a)) => a.iter().collect(),
        _ => Vec::new(),
    };
    let mut asks: Vec<&str> = requests
        .iter()
        .map(|r| r.get("method").and_then(Value::as_str).unwrap_or("unknown"))
        .collect();
    asks.sort_unstable();
    asks.dedup();
    if asks.is_empty() {
        "unspecified input".into()
    } else {
        asks.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn script() -> InputResponses {
        InputResponses(BTreeMap::from([(
            "elicitation/create".to_owned(),
            json!({"action": "accept", "content": {"confirmed": true}}),
        )]))
    }

    #[test]
    fn the_next_round_answers_each_request_and_echoes_the_state() {
        let asked = json!({"resultType": "input_required", "requestState": "{\"n\":1}",
            "inputRequests": {"confirm": {"method": "elicitation/create", "params": {}}}});
        let first = json!({"name": "t", "arguments": {}});
        let next = script().next_round(first, &asked).expect("answered");
        assert_eq!(
            next["inputResponses"]["confirm"],
            json!({"action": "accept", "content": {"confirmed": true}})
        );
        assert_eq!(next["requestState"], asked["requestState"]);
        assert_eq!(next["name"], "t");
        // A later round without state drops the earlier one.
        let stateless = json!({"resultType": "input_required",
            "inputRequests": {"confirm": {"method": "elicitation/create"}}});
        let again = script().next_round(next, &stateless).expect("answered");
        assert!(again.get("requestState").is_none(), "{again}");
    }

    #[test]
    fn capabilities_follow_the_script() {
        assert_eq!(script().capabilities(), json!({"elicitation": {}}));
        assert_eq!(InputResponses::default().capabilities(), json!({}));
    }

    #[test]
    fn an_unscripted_request_is_input_required() {
        let asked = json!({"resultType": "input_required",
            "inputRequests": {"m": {"method": "sampling/createMessage"}}});
        match script().next_round(json!({}), &asked) {
            Err(McpError::InputRequired { asks }) => assert_eq!(asks, "sampling/createMessage"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn input_required_names_what_is_asked() {
        let r = json!({"resultType": "input_required", "inputRequests": {
            "a": {"method": "elicitation/create", "params": {}},
            "b": {"method": "sampling/createMessage", "params": {}},
            "c": {"method": "elicitation/create", "params": {}}}});
        assert_eq!(input_asks(&r), "elicitation/create, sampling/createMessage");
        assert_eq!(
            input_asks(&json!({"resultType": "input_required", "requestState": "x"})),
            "unspecified input"
        );
    }
}
