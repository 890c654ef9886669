//! `websocket`: Zeek hands an HTTP connection to its WebSocket analyzer when the server answers
//! an `Upgrade: websocket` request with `101 Switching Protocols`; the service becomes
//! `http,websocket` (the HTTP detector asks [`upgraded`]).

use crate::scan::contains_ci;

/// The server accepted the client's WebSocket upgrade: a `101` whose `Upgrade` header, like
/// the request's, names `websocket`.
pub(crate) fn upgraded(req_upgrade: Option<&[u8]>, resp_upgrade: Option<&[u8]>, code: u32) -> bool {
    let wants = |v: Option<&[u8]>| v.is_some_and(|v| contains_ci(v, b"websocket"));
    code == 101 && wants(req_upgrade) && wants(resp_upgrade)
}

#[cfg(test)]
mod tests {
    use crate::{classify, Evidence, Side, TCP};

    const REQ: &[u8] = b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    fn service(resp: &[u8]) -> (Option<String>, Option<String>) {
        let (o, r): ([&[u8]; 1], [&[u8]; 1]) = ([REQ], [resp]);
        let v = classify(&Evidence {
            proto: TCP,
            orig_port: 40000,
            resp_port: 80,
            orig: Side {
                segments: &o,
                truncated: false,
                len: None,
            },
            resp: Side {
                segments: &r,
                truncated: false,
                len: None,
            },
        });
        (v.service(), v.server_name)
    }

    #[test]
    fn an_accepted_upgrade_is_http_then_websocket() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi";
        let (svc, name) = service(ok);
        assert_eq!(svc.as_deref(), Some("http,websocket"));
        assert_eq!(name.as_deref(), Some("ws.example"));
        let refused = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert_eq!(service(refused).0.as_deref(), Some("http"));
        let other = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n";
        assert_eq!(service(other).0.as_deref(), Some("http"));
    }
}
