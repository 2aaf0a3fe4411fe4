//! A test upstream that writes whatever bytes a test chooses: responses no HTTP library would
//! send (a status that is not a number, a `1xx` as the last answer), or a response trickled out
//! slower than a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// One piece of a raw answer: wait this long, then write these bytes.
pub type RawPart = (Duration, Vec<u8>);

/// An HTTP/1.1 server on a free loopback port that reads each request whole (head, and a body
/// of `content-length` bytes) and answers it with the parts its handler returns, then closes
/// the connection. Dropping it stops the server.
#[derive(Debug)]
pub struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawServer {
    /// Starts a server answering each request (its raw bytes) with `handler`'s parts.
    pub fn start<H>(handler: H) -> RawServer
    where
        H: Fn(&[u8]) -> Vec<RawPart> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|error| panic!("cannot start a raw test upstream: {error}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let handler = Arc::new(handler);
        let thread = std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(connection) = connection else {
                    continue;
                };
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || serve(connection, &*handler));
            }
        });
        RawServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut connection: TcpStream, handler: &(dyn Fn(&[u8]) -> Vec<RawPart> + Sync)) {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(request) = read_request(&mut connection) else {
        return;
    };
    for (delay, bytes) in handler(&request) {
        std::thread::sleep(delay);
        if connection.write_all(&bytes).is_err() {
            // The client (Envoy, after its timeout) went away.
            return;
        }
    }
}

/// The head and the `content-length` body of one request; `None` when the client closes first.
fn read_request(connection: &mut TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return Some(request);
            }
        }
        match connection.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(read) => request.extend_from_slice(&buffer[..read]),
        }
    }
}

/// A complete HTTP/1.1 response, written at once: `status_line` (e.g. `HTTP/1.1 200 OK`), the
/// headers, a `content-length`, `connection: close`, and the body.
pub fn raw_response(status_line: &str, headers: &[(&str, &str)], body: &str) -> Vec<RawPart> {
    vec![(Duration::ZERO, raw_bytes(status_line, headers, body))]
}

/// The bytes of [`raw_response`].
pub fn raw_bytes(status_line: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{status_line}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    text.into_bytes()
}
