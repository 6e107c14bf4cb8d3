//! A small HTTP/1.1 client for the API: one request per connection, over
//! a Unix socket or TCP (`http://` only). Enough for `braidctl` and the
//! tests, without an HTTP client stack.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// `http://host:port` (a trailing `/` is allowed).
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("{url:?}: expected http://host:port"));
        }
        Ok(Endpoint::Tcp(host.to_string()))
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("HTTP {}: not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client for one endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    pub token: Option<String>,
    pub timeout: Duration,
    /// Sent as `If-Match` with changes: the generation the change was
    /// made from (412 if the document moved on since).
    pub if_match: Option<u64>,
}

trait Stream: Read + Write {}
impl Stream for UnixStream {}
impl Stream for TcpStream {}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client { endpoint, token: None, timeout: Duration::from_secs(60), if_match: None }
    }

    fn connect(&self) -> io::Result<(Box<dyn Stream>, String)> {
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = UnixStream::connect(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                s.set_read_timeout(Some(self.timeout))?;
                s.set_write_timeout(Some(self.timeout))?;
                Ok((Box::new(s), "localhost".into()))
            }
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a).map_err(|e| io::Error::new(e.kind(), format!("{a}: {e}")))?;
                s.set_read_timeout(Some(self.timeout))?;
                s.set_write_timeout(Some(self.timeout))?;
                Ok((Box::new(s), a.clone()))
            }
        }
    }

    /// Sends one request and reads the whole answer. A server that answers
    /// before reading all of a large body (413) is still heard.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<Reply> {
        let (mut s, host) = self.connect()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: application/json\r\n");
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(g) = self.if_match.filter(|_| method != "GET") {
            head.push_str(&format!("If-Match: \"{g}\"\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        let sent = s.write_all(head.as_bytes()).and_then(|()| match body {
            Some(b) => s.write_all(b),
            None => Ok(()),
        });
        // No half-close after the request: the server would take it for a
        // client gone away. `Connection: close` ends the answer instead.
        let mut raw = Vec::new();
        let read = s.read_to_end(&mut raw);
        if raw.is_empty() {
            sent?;
            read?;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed without an answer"));
        }
        parse_reply(&raw)
    }

    pub fn get(&self, path: &str) -> io::Result<Reply> {
        self.request("GET", path, None)
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked, or to EOF).
pub fn parse_reply(raw: &[u8]) -> io::Result<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("incomplete HTTP header"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("HTTP header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let find = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad Content-Length"))?;
        rest.get(..len).ok_or_else(|| bad("body shorter than its Content-Length"))?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("bad chunk"))?;
        let size = std::str::from_utf8(&rest[..eol]).ok().and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let size = size.ok_or_else(|| bad("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or_else(|| bad("truncated chunk"))?);
        rest = rest.get(size + 2..).ok_or_else(|| bad("truncated chunk"))?;
    }
}

/// Percent-encodes a path segment (a route prefix has a `/`).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx: y\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.header("X")), (200, &b"{}"[..], Some("y")));
        let r = parse_reply(b"HTTP/1.1 413 Payload Too Large\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (413, &b"abcde"[..]));
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        assert_eq!(encode_segment("10.2.0.0/16"), "10.2.0.0%2F16");
        assert_eq!(encode_segment("fd00:2::/64"), "fd00:2::%2F64");
    }
}
