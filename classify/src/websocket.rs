//! `websocket`: Zeek hands an HTTP connection to its WebSocket analyzer when the server answers
//! an `Upgrade: websocket` request with `101 Switching Protocols`; the service becomes
//! `http,websocket`.

use crate::http::Head;
use crate::util::contains_ci;

/// The server accepted the client's WebSocket upgrade.
pub(crate) fn upgraded(req: &Head, resp: &Head, code: u32) -> bool {
    let wants = |h: &Head| {
        h.header(b"upgrade")
            .is_some_and(|v| contains_ci(v, b"websocket"))
    };
    code == 101 && wants(req) && wants(resp)
}

#[cfg(test)]
mod tests {
    use crate::{classify, Evidence, Side, TCP};

    #[test]
    fn an_accepted_upgrade_is_http_then_websocket() {
        let req: &[u8] = b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let ok: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi";
        let refused: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        let ev = |resp: &'static [u8]| {
            let o: &'static [&'static [u8]] = Box::leak(Box::new([req]));
            let r: &'static [&'static [u8]] = Box::leak(Box::new([resp]));
            Evidence {
                proto: TCP,
                orig_port: 40000,
                resp_port: 80,
                orig: Side {
                    segments: o,
                    truncated: false,
                },
                resp: Side {
                    segments: r,
                    truncated: false,
                },
            }
        };
        let v = classify(&ev(ok));
        assert_eq!(v.service().as_deref(), Some("http,websocket"));
        assert_eq!(v.server_name.as_deref(), Some("ws.example"));
        assert_eq!(classify(&ev(refused)).service().as_deref(), Some("http"));
    }
}
