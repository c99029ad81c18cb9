//! `veto dkim keygen`, the `[dkim]` keys and the gateway's STARTTLS
//! certificate, through the real binary: what is written, what is
//! printed, and what `veto check` and `veto serve` make of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// What one run of `veto` did.
struct Run {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`veto {}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    #[track_caller]
    fn succeeds(&self) -> &Self {
        assert_eq!(self.code, Some(0), "{self}");
        self
    }

    #[track_caller]
    fn fails(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a failure: {self}"
        );
        self
    }

    #[track_caller]
    fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}: {self}"
        );
        self
    }

    #[track_caller]
    fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {self}"
        );
        self
    }
}

/// A directory where `veto init .` was run.
struct Site {
    dir: TempDir,
}

impl Site {
    fn new() -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        site.veto(&["init", "."]).succeeds();
        site
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn veto(&self, args: &[&str]) -> Run {
        self.veto_env(args, &[])
    }

    /// Only PATH, HOME and `env` in the environment.
    fn veto_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_veto"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("HOME", self.dir.path());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the veto binary");
        Run {
            args: args.join(" "),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Sets `key = value` lines (TOML, as keygen prints them) in the
    /// `[section]` veto init wrote, replacing the empty defaults.
    fn set(&self, section: &str, lines: &[String]) {
        let path = self.path("veto.toml");
        let text = std::fs::read_to_string(&path).expect("veto.toml");
        let start = text
            .find(&format!("\n[{section}]\n"))
            .unwrap_or_else(|| panic!("no [{section}] in veto.toml"))
            + 1;
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |i| start + 1 + i + 1);
        let mut body = text[start..end].to_owned();
        for line in lines {
            let key = line.split(" = ").next().expect("key = value");
            let empty = format!("\n{key} = \"\"\n");
            assert!(
                body.contains(&empty),
                "no empty {key} in [{section}]: {body}"
            );
            body = body.replacen(&empty, &format!("\n{line}\n"), 1);
        }
        let text = format!("{}{body}{}", &text[..start], &text[end..]);
        std::fs::write(&path, text).expect("write veto.toml");
    }
}

/// The lines of keygen's output after the one that starts with `heading`,
/// up to the next empty line (skipping one right after the heading).
fn block(stdout: &str, heading: &str) -> Vec<String> {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .skip_while(|l| l.is_empty());
    let mut out = Vec::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        out.push(line.to_owned());
    }
    assert!(!out.is_empty(), "nothing under {heading:?} in:\n{stdout}");
    out
}

/// The tags of a DKIM key record (RFC 6376 §3.6.1).
fn tags(record: &str) -> Vec<(String, String)> {
    record
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').expect("tag=value");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn keygen_writes_a_private_key_prints_its_record_and_the_key_loads_in_check() {
    let site = Site::new();
    let run = site.veto(&[
        "dkim",
        "keygen",
        "--selector",
        "veto",
        "--domain",
        "Shop.Example",
    ]);
    run.succeeds();
    let key = site.path("veto-data/dkim/veto.shop.example.key");
    let pem = std::fs::read_to_string(&key).expect("the key file");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);

    // The record: its name, and a value that parses as a DKIM key record.
    let record = block(&run.stdout, "Publish this DNS TXT record:");
    assert_eq!(record[0], "  name:  veto._domainkey.shop.example");
    let value = record[1]
        .strip_prefix("  value: ")
        .unwrap_or_else(|| panic!("no value line: {run}"));
    let tags = tags(value);
    assert_eq!(tags[0], ("v".into(), "DKIM1".into()), "{value}");
    assert_eq!(tags[1], ("k".into(), "rsa".into()), "{value}");
    let p = &tags.iter().find(|(k, _)| k == "p").expect("p=").1;
    let spki = data_encoding::BASE64
        .decode(p.as_bytes())
        .expect("p= is base64");
    // A 2048-bit RSA SubjectPublicKeyInfo is 294 bytes.
    assert_eq!(spki.len(), 294, "{value}");

    // The zone-file form holds the same value in strings of ≤ 255.
    let zone = block(&run.stdout, "As a zone-file line");
    let strings: Vec<&str> = zone[0].split('"').skip(1).step_by(2).collect();
    assert!(zone[0].starts_with("  veto._domainkey.shop.example. IN TXT ( "));
    assert!(
        strings.len() >= 2 && strings.iter().all(|s| s.len() <= 255),
        "{zone:?}"
    );
    assert_eq!(strings.concat(), value);

    // The printed configuration lines, set in veto.toml, load: check shows
    // the record of the key it read, which is the one printed.
    let config = block(&run.stdout, "Then set these in the [dkim] section");
    assert_eq!(
        config,
        [
            "domain = \"shop.example\"".to_owned(),
            "selector = \"veto\"".to_owned(),
            format!("private_key_file = \"{}\"", key.display()),
        ]
    );
    site.veto(&["check"])
        .stdout_has("dkim: not set up")
        .stderr_has("warning: [dkim] is not set");
    site.set("dkim", &config);
    site.veto(&["check"])
        .succeeds()
        .stdout_has("dkim: rsa-sha256 signature as shop.example with selector veto")
        .stdout_has(&format!(
            "dkim: publish TXT veto._domainkey.shop.example \"{value}\""
        ))
        .stdout_has("ok");

    // Never over an existing key.
    site.veto(&[
        "dkim",
        "keygen",
        "--selector",
        "veto",
        "--domain",
        "shop.example",
    ])
    .fails()
    .stderr_has("already exists; veto never overwrites a key");
    assert_eq!(std::fs::read_to_string(&key).expect("the key file"), pem);
}

#[test]
fn an_ed25519_key_is_the_second_signature() {
    let site = Site::new();
    let rsa = site.veto(&[
        "dkim",
        "keygen",
        "--selector",
        "r1",
        "--domain",
        "shop.example",
        "--bits",
        "3072",
    ]);
    rsa.succeeds();
    let ed = site.veto(&[
        "dkim",
        "keygen",
        "--selector",
        "e1",
        "--domain",
        "shop.example",
        "--algorithm",
        "ed25519",
        "--out",
        "keys/e1.pem",
    ]);
    ed.succeeds();
    #[cfg(unix)]
    assert_eq!(mode(&site.path("keys/e1.pem")), 0o600);
    let record = block(&ed.stdout, "Publish this DNS TXT record:");
    let value = record[1].strip_prefix("  value: ").expect("value");
    let tags = tags(value);
    assert_eq!(tags[1], ("k".into(), "ed25519".into()));
    // RFC 8463 §4.2: the raw 32-byte key.
    let p = data_encoding::BASE64
        .decode(tags[2].1.as_bytes())
        .expect("base64");
    assert_eq!(p.len(), 32);

    let mut lines = block(&rsa.stdout, "Then set these in the [dkim] section");
    lines.extend(block(&ed.stdout, "Then set these in the [dkim] section"));
    assert!(
        lines[3].starts_with("ed25519_selector = \"e1\""),
        "{lines:?}"
    );
    site.set("dkim", &lines);
    site.veto(&["check"])
        .succeeds()
        .stdout_has("dkim: rsa-sha256 signature as shop.example with selector r1")
        .stdout_has("dkim: ed25519-sha256 signature as shop.example with selector e1")
        .stdout_has(&format!(
            "dkim: publish TXT e1._domainkey.shop.example \"{value}\""
        ));
}

#[test]
fn keygen_refuses_bad_arguments_and_writes_nothing() {
    let site = Site::new();
    for (args, says) in [
        (
            &["--bits", "1024"][..],
            "RSA keys of 1024 bits cannot be generated",
        ),
        (
            &["--algorithm", "ed25519", "--bits", "2048"][..],
            "--bits is for RSA keys",
        ),
    ] {
        let mut all = vec![
            "dkim",
            "keygen",
            "--selector",
            "s",
            "--domain",
            "shop.example",
        ];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--out", "k.pem"]);
        site.veto(&all).fails().stderr_has(says);
        assert!(!site.path("k.pem").exists());
    }
    site.veto(&[
        "dkim",
        "keygen",
        "--selector",
        "bad_selector",
        "--domain",
        "shop.example",
        "--out",
        "k.pem",
    ])
    .fails()
    .stderr_has("--selector: \"bad_selector\" is not a DKIM selector");
    assert!(!site.path("k.pem").exists());
}

/// A 1024-bit RSA key (made with `openssl genrsa 1024`): too weak to sign with.
const WEAK_RSA: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBANNZ6BJ1vKI2um2r
/SajeYRW0R6x1OV64mjv1KQeg1lI+e95uyjUhiJKqfQQsABeACrZGlWi5tPzhzCY
CuQve1UybYQjX981UalLp+lkYyeDBC4NeEV39aBZuAGAfnrt/sic7hzIZsEr/NYZ
h3VoCFQf6t5qzWheDgoGQzBfox8ZAgMBAAECgYEAye5kpP6ItBPGG3Lv9DLMr3yj
YMhXuMmn+MrsR8I/jNcEtaGBCInFfo4Hw4EOJ8uoLUgwuRFjqa5LxEoAXfRfyFJd
002IThj1Kdwm6ESG3UigKGrEHhR1eKtfkahyXJ54Wl+0I4+GAtYL1tY0J5eyAEPx
45MFgFZKOQxHmIGkOAECQQDqh5AAIcKSEDlLeD74cfWIt2vpwIU8YSPq8swGVu4z
0FqqBV0pSyXNWLBOlqa9Xeoo/y3Ei2sn1IZ0cl/LiJS5AkEA5rMi1Hf9KwsARGkU
5w5UfGt/u1SL1VKPVYTzgakl5GLbF8bAlnd42M7xBwtf523n1KJ12rdDhFoX1n+V
PhBtYQJAO3rIBZCKVRryPPaxGbdlKxhBsRXXdJm6T0LmhZEUdmWYKNiVaPybCLo+
dJ/2h75CvcUB6X/mXEKlGvFK5EauWQJASV7Rhfc/SjAufpNY9X8mOYfK0N47trWS
JmWpOCR+i5sxCOfKGlCW24U9PLtOXgEjSQn+J3g/fdlVWX+sDFgXIQJANi5XM1J9
MEhNfHJNpsh8aJeHnN1p9yJrqqLZQiMiiQJ3qj5RsXDlHuyqFMBhoUjw6PUIS2Ex
KJWd0aEwVCYUAQ==
-----END PRIVATE KEY-----
";

#[test]
fn check_and_serve_name_the_dkim_key_and_file_that_cannot_be_used() {
    let site = Site::new();
    let missing = site.path("nowhere.pem");
    let env_missing = [
        ("VETO_DKIM__SELECTOR", "veto"),
        ("VETO_DKIM__PRIVATE_KEY_FILE", missing.to_str().unwrap()),
    ];
    let says = format!(
        "[dkim] private_key_file = {}: cannot read it",
        missing.display()
    );
    site.veto_env(&["check"], &env_missing)
        .fails()
        .stderr_has(&says);
    site.veto_env(&["serve"], &env_missing)
        .fails()
        .stderr_has(&says);

    std::fs::write(site.path("weak.pem"), WEAK_RSA).unwrap();
    let weak = site.path("weak.pem");
    site.veto_env(
        &["check"],
        &[
            ("VETO_DKIM__SELECTOR", "veto"),
            ("VETO_DKIM__PRIVATE_KEY_FILE", weak.to_str().unwrap()),
        ],
    )
    .fails()
    .stderr_has(&format!(
        "[dkim] private_key_file = {}: RSA key is smaller than 2048 bits",
        weak.display()
    ));

    // An RSA key where the Ed25519 one belongs.
    site.veto(&[
        "dkim",
        "keygen",
        "--selector",
        "r",
        "--domain",
        "d.example",
        "--out",
        "r.pem",
    ])
    .succeeds();
    let rsa = site.path("r.pem");
    site.veto_env(
        &["check"],
        &[
            ("VETO_DKIM__SELECTOR", "r"),
            ("VETO_DKIM__PRIVATE_KEY_FILE", rsa.to_str().unwrap()),
            ("VETO_DKIM__ED25519_SELECTOR", "e"),
            ("VETO_DKIM__ED25519_PRIVATE_KEY_FILE", rsa.to_str().unwrap()),
        ],
    )
    .fails()
    .stderr_has(&format!(
        "[dkim] ed25519_private_key_file = {}: this is an RSA key",
        rsa.display()
    ));
}

#[test]
fn check_and_serve_name_the_tls_key_and_file_that_cannot_be_used() {
    let site = Site::new();
    site.veto(&["check"]).succeeds().stdout_has(&format!(
        "tls: veto serve will make a self-signed certificate for example.org in {}",
        site.path("veto-data/tls").display()
    ));

    let pair = veto_gateway::self_signed("mail.shop.example").expect("a certificate");
    let other = veto_gateway::self_signed("mail.shop.example").expect("a certificate");
    std::fs::write(site.path("cert.pem"), &pair.cert_pem).unwrap();
    std::fs::write(site.path("key.pem"), &pair.key_pem).unwrap();
    std::fs::write(site.path("other-key.pem"), &other.key_pem).unwrap();
    std::fs::write(site.path("garbage.pem"), "not a certificate\n").unwrap();
    let (cert, key) = (site.path("cert.pem"), site.path("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    site.veto_env(
        &["check"],
        &[
            ("VETO_GATEWAY__TLS_CERT_FILE", cert),
            ("VETO_GATEWAY__TLS_KEY_FILE", key),
        ],
    )
    .succeeds()
    .stdout_has(&format!(
        "tls: STARTTLS with {cert} ([gateway] tls_cert_file)"
    ));

    let garbage = site.path("garbage.pem");
    let garbage = garbage.to_str().unwrap();
    let missing = site.path("missing.pem");
    let missing = missing.to_str().unwrap();
    let other_key = site.path("other-key.pem");
    let other_key = other_key.to_str().unwrap();
    let cases = [
        (
            garbage,
            key,
            format!("[gateway] tls_cert_file = {garbage}: no PEM certificate"),
        ),
        (
            cert,
            missing,
            format!("[gateway] tls_key_file = {missing}: cannot read it"),
        ),
        (
            cert,
            garbage,
            format!("[gateway] tls_key_file = {garbage}: no PEM private key"),
        ),
        (
            cert,
            other_key,
            format!(
                "[gateway] tls_cert_file = {cert} and tls_key_file = {other_key}: the certificate and key cannot be used"
            ),
        ),
    ];
    for (c, k, says) in &cases {
        let env = [
            ("VETO_GATEWAY__TLS_CERT_FILE", *c),
            ("VETO_GATEWAY__TLS_KEY_FILE", *k),
            ("VETO_GATEWAY__LISTEN", "127.0.0.1:0"),
            ("VETO_WEB__LISTEN", "127.0.0.1:0"),
        ];
        site.veto_env(&["check"], &env).fails().stderr_has(says);
        site.veto_env(&["serve"], &env).fails().stderr_has(says);
    }
    site.veto_env(&["check"], &[("VETO_GATEWAY__TLS_CERT_FILE", cert)])
        .fails()
        .stderr_has("[gateway] tls_key_file: must be set when [gateway] tls_cert_file is");
    assert!(
        !site.path("veto-data/tls").exists(),
        "nothing self-signed was made while a certificate was configured"
    );
}
