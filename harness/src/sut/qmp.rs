//! The QEMU Machine Protocol, as much as the harness speaks: connect to a `-qmp unix:`
//! socket, leave capabilities negotiation, run a command and read its answer
//! (docs/interop/qmp-spec.rst: one JSON object per line; a command gets `return` or
//! `error`, and `event`s may come in between).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `socket` once QEMU has made it, within `limit`, and enters command
    /// mode.
    pub fn connect(socket: &Path, limit: Duration) -> Result<Qmp, String> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) if start.elapsed() > limit => {
                    return Err(format!("QMP socket {}: {e}", socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.message()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("not a QMP greeting: {greeting}"));
        }
        qmp.execute("qmp_capabilities", json!({}))?
            .map_err(|e| format!("qmp_capabilities: {e}"))?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments`: Ok(Ok(return value)), or Ok(Err(QEMU's error
    /// description)); Err if the session broke.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Value,
    ) -> Result<Result<Value, String>, String> {
        let line = json!({ "execute": command, "arguments": arguments }).to_string();
        writeln!(self.writer, "{line}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let answer = self.message()?;
            if let Some(value) = answer.get("return") {
                return Ok(Ok(value.clone()));
            }
            if let Some(error) = answer.get("error") {
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
                return Ok(Err(desc.to_owned()));
            }
            // An event: not the answer.
        }
    }

    fn message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP: QEMU closed the socket".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}")),
            Err(e) => Err(format!("QMP read: {e}")),
        }
    }
}
