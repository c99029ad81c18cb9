//! The TCP listener and the maildir delivery, over real loopback sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::World;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use veto_gateway::{Gateway, MaildirRelay};

/// A plain SMTP client: one command, one (possibly multi-line) reply.
struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let mut c = Client {
            stream: BufReader::new(TcpStream::connect(addr).await.expect("connect")),
        };
        let greeting = c.reply().await;
        assert!(greeting.starts_with("220"), "{greeting}");
        c
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read_line(&mut line))
                .await
                .expect("a reply in time")
                .expect("read");
            assert!(n > 0, "connection closed after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn send(&mut self, line: &str) -> String {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write");
        self.reply().await
    }
}

fn plain(key: &str) -> String {
    data_encoding::BASE64.encode(format!("\0x\0{key}").as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_run_per_connection_and_copies_land_in_the_maildir() {
    let w = World::new().await;
    w.grant("ann@example.com", &w.news).await;
    w.grant("cat@example.com", &w.news).await;
    w.withdraw("cat@example.com", &w.news).await;

    let outbox = tempfile::tempdir().expect("tempdir");
    let maildir = veto_sender::Maildir::open(outbox.path()).expect("maildir");
    let gateway = Gateway::new(
        w.gateway.config().clone(),
        w.gateway.guard().clone(),
        Arc::new(MaildirRelay::new(maildir)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(veto_gateway::listen(listener, gateway, async {
        let _ = stopped.await;
    }));

    // Two sessions at once.
    let mut idle = Client::connect(addr).await;
    let mut c = Client::connect(addr).await;
    assert!(c.send("EHLO tool").await.starts_with("250"));
    let auth = c.send(&format!("AUTH PLAIN {}", plain(&w.news_key))).await;
    assert!(auth.starts_with("235"), "{auth}");
    assert!(
        c.send("MAIL FROM:<shop@example.org>")
            .await
            .starts_with("250")
    );
    assert!(c.send("RCPT TO:<ann@example.com>").await.starts_with("250"));
    let cat = c.send("RCPT TO:<cat@example.com>").await;
    assert!(cat.starts_with("550 5.7.1"), "{cat}");
    assert!(c.send("DATA").await.starts_with("354"));
    let body = String::from_utf8(support::message("")).expect("utf-8");
    c.stream
        .get_mut()
        .write_all(body.as_bytes())
        .await
        .expect("write");
    let done = c.send(".").await;
    assert!(done.starts_with("250"), "{done}");

    let files: Vec<_> = std::fs::read_dir(outbox.path().join("new"))
        .expect("new/")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let copy = std::fs::read_to_string(&files[0]).expect("copy");
    assert!(
        copy.starts_with("Delivered-To: ann@example.com\r\n"),
        "{copy}"
    );
    assert!(copy.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));

    // Shutdown: no new connections, but the sessions in flight finish.
    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still accepting after shutdown");
    assert!(!server.is_finished(), "waits for the sessions in flight");
    assert!(idle.send("NOOP").await.starts_with("250"));
    assert!(idle.send("QUIT").await.starts_with("221"));
    assert!(c.send("QUIT").await.starts_with("221"));
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the listener stops once its sessions end")
        .expect("no panic");
}
