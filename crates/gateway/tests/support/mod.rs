//! A gateway over a temp SQLite store, an in-memory relay, and an SMTP
//! client over `tokio::io::duplex` with small helpers.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use veto_core::{
    Channel, EmailAddress, EventKind, NewEvent, PolicySettings, Role, Scope, Source, Timestamp,
    Topic, TopicKey,
};
use veto_gateway::{
    Config, FooterText, Gateway, IpNetwork, Links, Relay, RelayFuture, RelayOutcome, TrustedNetwork,
};
use veto_mail::{TokenKey, TokenKeys};
use veto_store::{Admitted, Append, ContactInput, Evidence, Guard, NewTopic, Store};

/// One copy the relay was handed.
#[derive(Debug, Clone)]
pub struct Relayed {
    pub from: String,
    pub to: String,
    pub message: String,
}

/// What the relay does with copies to one address, instead of accepting.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// A 5xx from upstream: refused for good.
    Reject(String),
    /// Upstream cannot be reached (the tool is told 451).
    Unavailable(String),
    /// Upstream takes this long, then accepts.
    Slow(Duration),
}

/// Records what it receives and accepts it, unless scripted otherwise.
#[derive(Default)]
pub struct MemoryRelay {
    pub received: Mutex<Vec<Relayed>>,
    pub script: Mutex<std::collections::HashMap<String, Scripted>>,
}

impl MemoryRelay {
    /// From now on, copies to `to` get `what`.
    pub fn script(&self, to: &str, what: Scripted) {
        self.script.lock().unwrap().insert(to.to_owned(), what);
    }

    /// Back to accepting copies to `to`.
    pub fn unscript(&self, to: &str) {
        self.script.lock().unwrap().remove(to);
    }
}

impl Relay for MemoryRelay {
    fn relay<'a>(
        &'a self,
        envelope_from: &'a str,
        admitted: &'a Admitted,
        message: &'a [u8],
    ) -> RelayFuture<'a> {
        Box::pin(async move {
            let scripted = self
                .script
                .lock()
                .unwrap()
                .get(admitted.to().as_str())
                .cloned();
            match scripted {
                Some(Scripted::Reject(reply)) => return Ok(RelayOutcome::Rejected { reply }),
                Some(Scripted::Unavailable(why)) => return Err(veto_gateway::RelayError(why)),
                Some(Scripted::Slow(pause)) => tokio::time::sleep(pause).await,
                None => {}
            }
            self.received.lock().unwrap().push(Relayed {
                from: envelope_from.to_owned(),
                to: admitted.to().as_str().to_owned(),
                message: String::from_utf8(message.to_vec()).expect("utf-8 copy"),
            });
            Ok(RelayOutcome::Accepted {
                reply: "250 2.0.0 Ok: queued".into(),
            })
        })
    }
}

pub struct World {
    pub store: Store,
    pub news: Topic,
    pub offers: Topic,
    pub relay: Arc<MemoryRelay>,
    pub gateway: Arc<Gateway>,
    /// A marketer's key whose default topic is `news`.
    pub news_key: String,
    /// A marketer's key with no default topic.
    pub bare_key: String,
    wording: i64,
    _dir: tempfile::TempDir,
}

pub fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("test address")
}

pub fn config() -> Config {
    let mut config = Config::new(
        "gateway.test",
        Links {
            public_url: "https://veto.example.org".into(),
            mail_domain: "veto.example.org".into(),
            list_domain: "lists.example.org".into(),
            feedback_sender: "veto".into(),
        },
        FooterText {
            organisation: "Example Shop Ltd".into(),
            postal_address: "1 High Street, Exampletown".into(),
            unsubscribe_text: "Unsubscribe".into(),
            preferences_text: "Your preferences".into(),
        },
    );
    config.trusted_networks = vec![
        TrustedNetwork {
            network: IpNetwork::parse("10.0.0.0/8").unwrap(),
            default_topic: Some(TopicKey::parse("news").unwrap()),
        },
        TrustedNetwork {
            network: IpNetwork::parse("172.16.0.0/12").unwrap(),
            default_topic: None,
        },
    ];
    config
}

impl World {
    pub async fn new() -> World {
        World::with_config(config()).await
    }

    pub async fn with_config(config: Config) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("veto.db"))
            .await
            .expect("open sqlite");
        let news = store
            .add_topic(NewTopic {
                key: TopicKey::parse("news").unwrap(),
                name: "Product news".into(),
                description: "New products, about once a month.".into(),
                group: None,
            })
            .await
            .unwrap();
        let offers = store
            .add_topic(NewTopic {
                key: TopicKey::parse("offers").unwrap(),
                name: "Offers".into(),
                description: "Discounts.".into(),
                group: None,
            })
            .await
            .unwrap();
        let wording = store
            .add_wording("Send me product news by email.")
            .await
            .unwrap()
            .id
            .0;
        let news_key = store
            .create_api_key(Role::Marketer, Some(&news.key))
            .await
            .unwrap()
            .key;
        let bare_key = store
            .create_api_key(Role::Marketer, None)
            .await
            .unwrap()
            .key;
        let relay = Arc::new(MemoryRelay::default());
        let guard = Guard::new(store.clone(), PolicySettings::default());
        let gateway = Gateway::new(config, guard, relay.clone());
        World {
            store,
            news,
            offers,
            relay,
            gateway,
            news_key,
            bare_key,
            wording,
            _dir: dir,
        }
    }

    async fn event(&self, address: &str, kind: EventKind, topic: &Topic) {
        let outcome = self
            .store
            .append(
                vec![Append {
                    contact: ContactInput::new(email(address)),
                    event: NewEvent {
                        kind,
                        scope: Scope::Topic(topic.id),
                        channel: Some(Channel::Email),
                        source: Source::Form,
                        at: Timestamp::now(),
                    },
                    evidence: Evidence {
                        wording: Some(self.wording),
                        ip: Some("192.0.2.10".into()),
                        user_agent: None,
                        form_url: Some("https://shop.example/signup".into()),
                    },
                    actor: "test".into(),
                }],
                false,
            )
            .await
            .unwrap();
        assert!(
            matches!(outcome[0], veto_store::AppendOutcome::Recorded { .. }),
            "{outcome:?}"
        );
    }

    pub async fn grant(&self, address: &str, topic: &Topic) {
        self.event(address, EventKind::Grant, topic).await;
    }

    pub async fn withdraw(&self, address: &str, topic: &Topic) {
        self.event(address, EventKind::Withdraw, topic).await;
    }

    pub async fn erase(&self, address: &str) {
        self.store
            .erase(&email(address), "test", Timestamp::now())
            .await
            .unwrap();
    }

    pub async fn token_keys(&self) -> TokenKeys {
        let mut keys = self
            .store
            .token_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|(id, secret)| TokenKey::new(id, secret));
        let current = keys.next().unwrap();
        TokenKeys::new(current, keys.collect()).unwrap()
    }

    pub fn relayed(&self) -> Vec<Relayed> {
        self.relay.received.lock().unwrap().clone()
    }

    /// A client connected from `peer`, past the greeting.
    pub async fn connect(&self, peer: &str) -> Client {
        let (client, server) = tokio::io::duplex(1 << 16);
        let peer: IpAddr = peer.parse().unwrap();
        let session = self.gateway.session(server, peer);
        tokio::spawn(session.run());
        let mut client = Client {
            io: client,
            buf: Vec::new(),
        };
        let greeting = client.read_reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }
}

impl World {
    /// A client of the inbound listener (veto's own addresses), connected
    /// from `peer`, past the greeting.
    #[allow(dead_code)] // tests/inbound.rs only
    pub async fn connect_inbound(&self, peer: &str) -> Client {
        let (client, server) = tokio::io::duplex(1 << 16);
        let peer: IpAddr = peer.parse().unwrap();
        let session = self.gateway.inbound_session(server, peer);
        tokio::spawn(session.run());
        let mut client = Client {
            io: client,
            buf: Vec::new(),
        };
        let greeting = client.read_reply().await;
        assert!(greeting.starts_with("220 "), "{greeting}");
        client
    }
}

pub struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// One whole reply (all its lines), or "EOF".
    pub async fn read_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = match self.read_line().await {
                Some(line) => line,
                None => {
                    return if reply.is_empty() {
                        "EOF".into()
                    } else {
                        reply
                    };
                }
            };
            reply.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return reply;
            }
        }
    }

    async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(String::from_utf8(line).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk))
                .await
                .expect("the gateway answered within 10 s")
                .unwrap();
            if read == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    /// Sends one command line and checks the reply's code.
    pub async fn cmd(&mut self, line: &str, expected: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let reply = self.read_reply().await;
        assert!(
            reply.starts_with(expected),
            "{line:?}: expected {expected}, got {reply:?}"
        );
        reply
    }

    pub async fn ehlo(&mut self) -> String {
        self.cmd("EHLO tool.example", "250").await
    }

    pub async fn auth(&mut self, key: &str) -> String {
        let response = data_encoding::BASE64.encode(format!("\0tool\0{key}").as_bytes());
        self.cmd(&format!("AUTH PLAIN {response}"), "235").await
    }

    pub async fn mail_from(&mut self, address: &str, expected: &str) -> String {
        self.cmd(&format!("MAIL FROM:<{address}>"), expected).await
    }

    pub async fn rcpt_to(&mut self, address: &str, expected: &str) -> String {
        self.cmd(&format!("RCPT TO:<{address}>"), expected).await
    }

    /// DATA, then `bytes` as they are, then the end-of-data line.
    pub async fn data(&mut self, bytes: &[u8], expected: &str) -> String {
        self.cmd("DATA", "354").await;
        self.send(bytes).await;
        if !bytes.ends_with(b"\r\n") {
            self.send(b"\r\n").await;
        }
        self.send(b".\r\n").await;
        let reply = self.read_reply().await;
        assert!(
            reply.starts_with(expected),
            "end of DATA: expected {expected}, got {reply:?}"
        );
        reply
    }
}

/// A plain marketing message.
pub fn message(extra_headers: &str) -> Vec<u8> {
    format!(
        "From: Shop <news@shop.example>\r\n\
         To: customers@shop.example\r\n\
         Subject: Autumn collection\r\n\
         Message-ID: <autumn-1@shop.example>\r\n\
         {extra_headers}\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Our autumn collection is here.\r\n"
    )
    .into_bytes()
}
