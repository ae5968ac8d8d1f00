//! JSON-RPC ids echoed exactly as the client wrote them.
//!
//! `serde_json::Value` keeps an integer past 64 bits, or a number spelt
//! `1e2` or `0.10`, only as the nearest float: 2^70 would come back as
//! `1.1805916207174113e21`, an id the client never sent. Such an id is
//! replaced, for the daemon's inner workings, by a string no client can
//! send (it starts with U+0001 and carries a UUID), and the answer and
//! progress lines of the request get the client's literal back as they are
//! written. Everything else keeps its `Value`, untouched: the daemon's other
//! layers never see the difference. (serde_json's `arbitrary_precision`
//! would do it globally, but it breaks the journal's internally tagged
//! records, whose numbers it turns into maps.)

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// How to write one request's id back.
#[derive(Debug, Clone)]
pub(super) struct IdEcho {
    /// The id the daemon works with.
    pub id: Value,
    /// `"id":<surrogate>` → `"id":<literal>`, when they differ.
    swap: Option<(String, String)>,
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

impl IdEcho {
    /// The id of a request `line`, whose parsed form is `id`.
    pub fn new(line: &[u8], id: Value) -> IdEcho {
        let literal = serde_json::from_slice::<IdOnly>(line)
            .ok()
            .and_then(|raw| raw.id)
            .map(|raw| raw.get().to_string());
        match literal {
            Some(literal)
                if id.is_number()
                    && serde_json::to_string(&id).ok().as_deref() != Some(literal.as_str()) =>
            {
                let surrogate = Value::String(format!("\u{1}rbdsnapd-id-{}", uuid::Uuid::new_v4()));
                let swap = (format!("\"id\":{surrogate}"), format!("\"id\":{literal}"));
                IdEcho {
                    id: surrogate,
                    swap: Some(swap),
                }
            }
            _ => IdEcho { id, swap: None },
        }
    }

    /// One outgoing line of this request, its id as the client wrote it.
    pub fn line<T: serde::Serialize>(&self, message: &T) -> Option<String> {
        let mut line = serde_json::to_string(message).ok()?;
        if let Some((surrogate, literal)) = &self.swap {
            line = line.replacen(surrogate.as_str(), literal, 1);
        }
        line.push('\n');
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Response;

    fn echoed(id: &str) -> String {
        let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"jobs.list"}}"#);
        let parsed: Value = serde_json::from_str(&line).expect("json");
        let echo = IdEcho::new(line.as_bytes(), parsed["id"].clone());
        echo.line(&Response::ok(echo.id.clone(), Value::Null))
            .expect("line")
    }

    #[test]
    fn every_id_comes_back_as_it_was_written() {
        for id in [
            "1180591620717411303424",
            "9007199254740993",
            "-9223372036854775809",
            "1e2",
            "0.1000",
            "7",
            "\"x\"",
        ] {
            let answer = echoed(id);
            assert!(answer.contains(&format!(r#""id":{id},"#)), "{id}: {answer}");
        }
    }
}
