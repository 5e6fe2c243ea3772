//! JSON-line encoding of envelopes, and the decoding of requests with the error answers that
//! bad input gets.

use super::protocol::{ErrorCode, Request, Response, WireError, MAX_LINE, PROTOCOL_VERSION};
use serde::Serialize;

/// One JSON object and a newline.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

impl Response {
    pub fn ok(id: u64, data: serde_json::Value) -> Self {
        Self {
            id,
            ok: true,
            data: Some(data),
            error: None,
        }
    }
    /// An answer whose data is `data` serialised (a status, a report, a log; null if it
    /// cannot be).
    pub fn ok_with<T: Serialize>(id: u64, data: &T) -> Self {
        Self::ok(
            id,
            serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        )
    }
    pub fn err(id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            ok: false,
            data: None,
            error: Some(WireError {
                code,
                message: message.into(),
            }),
        }
    }
}

/// Decodes one line (without its newline). Bad input becomes the error answer to send back,
/// carrying the request's id when it could be read.
pub fn decode_request(line: &[u8]) -> Result<Request, Response> {
    if line.len() > MAX_LINE {
        return Err(Response::err(
            0,
            ErrorCode::TooLong,
            format!("request longer than {MAX_LINE} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| Response::err(0, ErrorCode::BadRequest, format!("not JSON: {e}")))?;
    let id = value.get("id").and_then(|v| v.as_u64()).unwrap_or(0);
    let req: Request = serde_json::from_value(value)
        .map_err(|e| Response::err(id, ErrorCode::BadRequest, format!("bad request: {e}")))?;
    if req.v != PROTOCOL_VERSION {
        return Err(Response::err(
            id,
            ErrorCode::UnsupportedVersion,
            format!(
                "protocol version {} is not supported (this agent speaks {PROTOCOL_VERSION})",
                req.v
            ),
        ));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::Command;

    #[test]
    fn decodes_a_request() {
        let r = decode_request(br#"{"id":7,"cmd":"update"}"#).unwrap();
        assert_eq!((r.id, r.cmd), (7, Command::Update));
    }

    #[test]
    fn garbage_gets_an_error_with_code() {
        let e = decode_request(b"\x00\xffgarbage").unwrap_err();
        assert_eq!(e.error.unwrap().code, ErrorCode::BadRequest);
    }

    #[test]
    fn unknown_command_keeps_the_id() {
        let e = decode_request(br#"{"id":9,"cmd":"format_disk"}"#).unwrap_err();
        assert_eq!(e.id, 9);
        assert!(e.error.unwrap().message.contains("format_disk"));
    }

    #[test]
    fn other_version_is_refused() {
        let e = decode_request(br#"{"id":1,"cmd":"status","v":99}"#).unwrap_err();
        assert_eq!(e.error.unwrap().code, ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn encoded_lines_end_in_one_newline() {
        let line = encode(&Response::ok(1, serde_json::json!({"a": "b\nc"})));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(line.ends_with(b"\n"));
    }
}
