//! A line-oriented JSON-RPC client over a plain `UnixStream`, with read
//! timeouts: requests, answers, progress notifications.

#[allow(unused_imports)]
use super::*;

/// What reading a connection produced, other than a message.
#[derive(Debug)]
pub enum Msg {
    /// A JSON message.
    Message(Value),
    /// The daemon closed the connection.
    Eof,
    /// Nothing complete arrived in time.
    Timeout,
    /// The connection failed.
    Error(String),
}

/// An answer to a request.
#[derive(Debug, Clone)]
pub struct Response(pub Value);

impl Response {
    /// The answer's id.
    pub fn id(&self) -> &Value {
        &self.0["id"]
    }

    /// Whether it carries a result (and no error).
    pub fn is_ok(&self) -> bool {
        self.0.get("result").is_some() && self.0.get("error").is_none()
    }

    /// The result; panics with the answer when it is an error.
    pub fn result(&self) -> &Value {
        assert!(self.is_ok(), "expected a result, got {}", self.0);
        &self.0["result"]
    }

    /// The error object; panics with the answer when it is a result.
    pub fn error(&self) -> &Value {
        assert!(
            self.0.get("error").is_some() && self.0.get("result").is_none(),
            "expected an error, got {}",
            self.0
        );
        &self.0["error"]
    }

    /// The error's `data.kind`.
    pub fn kind(&self) -> &str {
        self.error()["data"]["kind"].as_str().unwrap_or_default()
    }

    /// The error's numeric code.
    pub fn code(&self) -> i64 {
        self.error()["code"].as_i64().unwrap_or_default()
    }

    /// Assert this is the error `kind` with `code`, with a message.
    pub fn assert_error(&self, code: i64, kind: &str, context: &str) {
        let error = self.error();
        assert_eq!(
            (self.code(), self.kind()),
            (code, kind),
            "{context}: {}",
            self.0
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{context}: error without a message: {}",
            self.0
        );
        assert_eq!(self.0["jsonrpc"], "2.0", "{context}: {}", self.0);
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    partial: Vec<u8>,
    next_id: u64,
    /// Wait for one message at most this long.
    pub timeout: Duration,
    /// Notifications seen while waiting for answers, in arrival order.
    pub notifications: Vec<Value>,
    /// Answers to other ids seen while waiting, in arrival order.
    stash: VecDeque<Value>,
    /// The method of each request sent, by its id as JSON: answers are
    /// checked against that method's schema in the OpenRPC document.
    methods: HashMap<String, String>,
}

impl Conn {
    /// Wrap a connected stream.
    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Conn {
        let writer = stream.try_clone().expect("dup stream");
        Conn {
            reader: BufReader::new(stream),
            writer,
            partial: Vec::new(),
            next_id: 1,
            timeout,
            notifications: Vec::new(),
            stash: VecDeque::new(),
            methods: HashMap::new(),
        }
    }

    /// Remember the method of a request line, if it is one.
    fn remember(&mut self, bytes: &[u8]) {
        let Ok(request) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        if let (Some(id), Some(method)) = (request.get("id"), request["method"].as_str()) {
            self.methods.insert(id.to_string(), method.to_string());
        }
    }

    /// Hold a message to the published protocol (tests/common/openrpc.rs).
    fn conform(&self, message: &Value) {
        let method = message
            .get("id")
            .and_then(|id| self.methods.get(&id.to_string()))
            .map(String::as_str);
        if let Some(wrong) = super::super::openrpc::protocol().check(method, message) {
            panic!("the daemon's message does not follow docs/openrpc.json: {wrong}\n{message}");
        }
    }

    /// Write `bytes` and a newline.
    pub fn send_line(&mut self, bytes: &[u8]) {
        self.remember(bytes);
        let mut line = bytes.to_vec();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// Write `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the daemon");
    }

    /// Close our writing side (the daemon reads EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// Send a request with `id` without waiting.
    pub fn send_request(&mut self, id: &Value, method: &str, params: Value) {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(request.to_string().as_bytes());
    }

    /// Next message from the wire (stashed answers first), waiting at most
    /// `timeout`.
    pub fn read_message(&mut self, timeout: Duration) -> Msg {
        if let Some(v) = self.stash.pop_front() {
            return Msg::Message(v);
        }
        self.read_wire(timeout)
    }

    fn read_wire(&mut self, timeout: Duration) -> Msg {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Msg::Timeout;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) if self.partial.is_empty() => return Msg::Eof,
                Ok(0) => {
                    let line = std::mem::take(&mut self.partial);
                    return Msg::Error(format!(
                        "connection closed inside a line: {}",
                        String::from_utf8_lossy(&line)
                    ));
                }
                Ok(_) if self.partial.last() == Some(&b'\n') => {
                    let line = std::mem::take(&mut self.partial);
                    return match serde_json::from_slice(&line) {
                        Ok(v) => {
                            self.conform(&v);
                            Msg::Message(v)
                        }
                        Err(e) => Msg::Error(format!(
                            "the daemon sent a line that is not JSON ({e}): {}",
                            String::from_utf8_lossy(&line)
                        )),
                    };
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Msg::Timeout
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Msg::Eof,
                Err(e) => return Msg::Error(e.to_string()),
            }
        }
    }

    /// Next answer (whatever its id), collecting notifications on the way.
    pub fn read_answer(&mut self, timeout: Duration) -> Msg {
        loop {
            match self.read_message(timeout) {
                Msg::Message(m) if m.get("method").is_some() && m.get("id").is_none() => {
                    self.notifications.push(m);
                }
                other => return other,
            }
        }
    }

    /// Wait for the answer to `id`: notifications are collected in
    /// [`Conn::notifications`], answers to other ids kept for later reads.
    pub fn try_wait_for(&mut self, id: &Value) -> Result<Response, Msg> {
        if let Some(pos) = self.stash.iter().position(|m| &m["id"] == id) {
            let found = self.stash.remove(pos).expect("stashed answer");
            return Ok(Response(found));
        }
        loop {
            match self.read_wire(self.timeout) {
                Msg::Message(m) if m.get("method").is_some() && m.get("id").is_none() => {
                    self.notifications.push(m);
                }
                Msg::Message(m) if &m["id"] == id => return Ok(Response(m)),
                Msg::Message(m) => self.stash.push_back(m),
                other => return Err(other),
            }
        }
    }

    /// [`Conn::try_wait_for`], panicking when no answer comes.
    pub fn wait_for(&mut self, id: &Value) -> Response {
        self.try_wait_for(id)
            .unwrap_or_else(|m| panic!("no answer to id {id}: {m:?}"))
    }

    /// A fresh numeric id.
    pub fn fresh_id(&mut self) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        json!(id)
    }

    /// Send `method` with `params` and wait for its answer.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Response, Msg> {
        let id = self.fresh_id();
        self.send_request(&id, method, params);
        self.try_wait_for(&id)
    }

    /// [`Conn::try_call`], panicking when no answer comes.
    pub fn call(&mut self, method: &str, params: Value) -> Response {
        self.try_call(method, params)
            .unwrap_or_else(|m| panic!("no answer to {method}: {m:?}"))
    }

    /// Send a `snapshot.create` without waiting; its request id.
    pub fn send_create(&mut self, params: Value) -> Value {
        let id = self.fresh_id();
        self.send_request(&id, "snapshot.create", params);
        id
    }

    /// Read until request `id` reports `phase`; its job id. An answer
    /// first (other than to another id, kept for later) is an error.
    pub fn until_phase(&mut self, id: &Value, phase: &str) -> Result<String, String> {
        loop {
            match self.read_message(self.timeout) {
                Msg::Message(m) if m["params"]["id"] == *id && m["params"]["phase"] == phase => {
                    return Ok(m["params"]["job_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string());
                }
                Msg::Message(m) if m["id"] == *id => {
                    return Err(format!("answered before phase {phase}: {m}"))
                }
                Msg::Message(m) if m.get("id").is_some() => self.stash.push_back(m),
                Msg::Message(m) => self.notifications.push(m),
                other => return Err(format!("no {phase} progress: {other:?}")),
            }
        }
    }

    /// Progress notifications collected so far for request `id`.
    pub fn progress_of(&self, id: &Value) -> Vec<Value> {
        self.notifications
            .iter()
            .filter(|n| n["method"] == "progress" && &n["params"]["id"] == id)
            .cloned()
            .collect()
    }
}
