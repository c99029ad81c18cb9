//! The listener's connection limits, over real loopback sockets (clients
//! come from 127.0.0.1, 127.0.0.2, … to be different addresses).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{World, config};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A gateway with these limits listening on a free loopback port.
async fn serve(max_connections: usize, per_client: usize) -> (World, SocketAddr) {
    let mut config = config();
    config.max_connections = max_connections;
    config.max_connections_per_client = per_client;
    let w = World::with_config(config).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(veto_gateway::listen(
        listener,
        w.gateway.clone(),
        std::future::pending(),
    ));
    (w, addr)
}

struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects from `source` (an address in 127.0.0.0/8); the first line
    /// the server says.
    async fn connect(source: &str, addr: SocketAddr) -> (Client, String) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{source}:0").parse().expect("source address"))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("connect");
        let mut c = Client {
            stream: BufReader::new(stream),
        };
        let first = c.line().await;
        (c, first)
    }

    /// One line, or "EOF".
    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read_line(&mut line))
            .await
            .expect("the gateway answered within 10 s")
            .unwrap_or(0);
        if n == 0 { "EOF".into() } else { line }
    }

    async fn send(&mut self, line: &str) -> String {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.line().await
    }
}

#[track_caller]
fn greeted(first: &str) {
    assert!(first.starts_with("220 "), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_from_one_address_get_421_and_places_come_back() {
    let (_w, addr) = serve(10, 2).await;
    let (mut a1, first) = Client::connect("127.0.0.1", addr).await;
    greeted(&first);
    let (_a2, first) = Client::connect("127.0.0.1", addr).await;
    greeted(&first);
    let (mut a3, first) = Client::connect("127.0.0.1", addr).await;
    assert!(
        first.starts_with("421 4.7.0 Too many connections from your address"),
        "{first}"
    );
    assert_eq!(a3.line().await, "EOF", "the refused connection is closed");
    // Another address is not affected.
    let (_b1, first) = Client::connect("127.0.0.2", addr).await;
    greeted(&first);

    // When a session ends its place is given back.
    assert!(a1.send("QUIT").await.starts_with("221"));
    assert_eq!(a1.line().await, "EOF");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_again, first) = Client::connect("127.0.0.1", addr).await;
        if first.starts_with("220 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place of a finished session was not given back: {first}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_is_limited_across_addresses() {
    let (_w, addr) = serve(3, 2).await;
    let mut open = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let (c, first) = Client::connect(source, addr).await;
        greeted(&first);
        open.push(c);
    }
    let (mut refused, first) = Client::connect("127.0.0.4", addr).await;
    assert!(
        first.starts_with("421 4.7.0 Too many connections"),
        "{first}"
    );
    assert!(!first.contains("your address"), "{first}");
    assert_eq!(refused.line().await, "EOF");

    // A client that just disconnects also gives its place back.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut c, first) = Client::connect("127.0.0.4", addr).await;
        if first.starts_with("220 ") {
            assert!(c.send("EHLO tool.example").await.starts_with("250"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place of a closed connection was not given back: {first}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
