//! The messages veto itself sends, read from the app's outbox maildir
//! (`{outbox}/new/`), as the person would read them in their inbox.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One message: its raw text (headers and body) and its body as text.
#[derive(Debug, Clone)]
pub struct Mail {
    pub file: PathBuf,
    pub raw: String,
    pub body: String,
}

impl Mail {
    /// The value of the first header called `name` (unfolded), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        let prefix = format!("{}:", name.to_ascii_lowercase());
        unfolded
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }

    /// The first link in the body that starts with `prefix`, whole.
    pub fn link(&self, prefix: &str) -> String {
        let start = self.body.find(prefix).unwrap_or_else(|| {
            panic!(
                "no link starting {prefix} in the mail {}:\n{}",
                self.file.display(),
                self.body
            )
        });
        self.body[start..]
            .split_whitespace()
            .next()
            .expect("a link")
            .to_owned()
    }
}

/// The outbox, remembering which messages the test has already read.
pub struct Outbox {
    new: PathBuf,
    seen: BTreeSet<PathBuf>,
}

impl Outbox {
    /// `maildir` is the directory the app's `Maildir` was opened on.
    pub fn new(maildir: &Path) -> Outbox {
        Outbox {
            new: maildir.join("new"),
            seen: BTreeSet::new(),
        }
    }

    /// The messages delivered since the last call, oldest first.
    pub fn take_new(&mut self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.new)
            .unwrap_or_else(|e| panic!("cannot read the outbox {}: {e}", self.new.display()))
            .map(|e| e.expect("outbox entry").path())
            .filter(|p| !self.seen.contains(p))
            .map(|p| {
                let at = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (at, p)
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, file)| {
                self.seen.insert(file.clone());
                let raw = std::fs::read_to_string(&file)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
                let body = body_text(&raw);
                Mail { file, raw, body }
            })
            .collect()
    }

    /// The one message delivered since the last call; fails on none or more.
    pub fn take_one(&mut self, what: &str) -> Mail {
        let mut new = self.take_new();
        assert_eq!(
            new.len(),
            1,
            "{what}: expected exactly one new message in the outbox, found {}: {:#?}",
            new.len(),
            new.iter().map(|m| &m.raw).collect::<Vec<_>>()
        );
        new.remove(0)
    }
}

/// The body of a mail as text, undoing quoted-printable or base64.
pub fn body_text(raw: &str) -> String {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .or_else(|| raw.split_once("\n\n"))
        .expect("a mail has headers and a body");
    let head = head.to_ascii_lowercase();
    if head.contains("content-transfer-encoding: base64") {
        let clean: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        String::from_utf8(base64_decode(&clean)).expect("a UTF-8 body")
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        let joined = body.replace("=\r\n", "").replace("=\n", "");
        let b = joined.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'='
                && i + 2 < b.len()
                && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8(out).expect("a UTF-8 body")
    } else {
        body.to_owned()
    }
}

fn base64_decode(input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = vec![];
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input.iter().take_while(|&&c| c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .expect("a base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
