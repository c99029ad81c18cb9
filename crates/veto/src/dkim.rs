//! DKIM keys: `veto dkim keygen`, and the signers `[dkim]` names for the
//! gateway's copies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use veto_mail::dkim::{KeyAlgorithm, Signer};

use crate::app;
use crate::config::{self, Config};

#[derive(Subcommand)]
pub enum DkimCmd {
    /// Make a DKIM key: writes the private key and prints the DNS TXT
    /// record to publish and the lines to add to veto.toml.
    Keygen(KeygenArgs),
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The selector, e.g. veto or s2025: the record goes at SELECTOR._domainkey.DOMAIN.
    #[arg(long)]
    selector: String,
    /// The signing domain (d=): the domain of your From addresses, so DMARC aligns.
    #[arg(long)]
    domain: String,
    #[arg(long, value_enum, default_value_t = Algorithm::Rsa)]
    algorithm: Algorithm,
    /// RSA key size: 2048 (default), 3072 or 4096.
    #[arg(long)]
    bits: Option<usize>,
    /// Where to write the private key (default: DATA_DIR/dkim/SELECTOR.DOMAIN.key).
    /// An existing file is never overwritten.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Algorithm {
    /// rsa-sha256: every receiver checks it.
    Rsa,
    /// ed25519-sha256 (RFC 8463): short, but not every receiver checks it; use it next to an RSA key.
    Ed25519,
}

pub fn run(cfg: Option<&Path>, cmd: DkimCmd) -> Result<ExitCode> {
    match cmd {
        DkimCmd::Keygen(args) => keygen(cfg, args),
    }
}

fn keygen(cfg: Option<&Path>, args: KeygenArgs) -> Result<ExitCode> {
    // The checks of `[dkim]`, so that the lines printed below load.
    let selector =
        config::parse_selector(&args.selector).map_err(|e| anyhow!("--selector: {e}"))?;
    let domain = config::parse_domain(&args.domain).map_err(|e| anyhow!("--domain: {e}"))?;
    let generated = match (args.algorithm, args.bits) {
        (Algorithm::Rsa, bits) => veto_mail::dkim::generate_rsa(bits.unwrap_or(2048))?,
        (Algorithm::Ed25519, None) => veto_mail::dkim::generate_ed25519()?,
        (Algorithm::Ed25519, Some(_)) => {
            bail!("--bits is for RSA keys; an Ed25519 key has one size")
        }
    };
    let signer = Signer::from_pem(&generated.private_key_pem, &domain, &selector)
        .with_context(|| format!("--selector {selector:?} --domain {domain:?} cannot be used"))?;
    let out = match args.out {
        Some(out) => out,
        None => app::load_config(cfg)?
            .store
            .data_dir
            .join("dkim")
            .join(format!("{}.{}.key", signer.selector(), signer.domain())),
    };
    let out = std::path::absolute(&out).unwrap_or(out);
    write_new_private(&out, generated.private_key_pem.as_bytes())?;

    let name = signer.dns_name();
    let value = &generated.dns_record;
    let path = toml_string(&out.display().to_string());
    println!(
        "wrote the private key to {} (readable by its owner only; back it up with the data directory)",
        out.display()
    );
    println!();
    println!("Publish this DNS TXT record:");
    println!("  name:  {name}");
    println!("  value: {value}");
    println!();
    println!("As a zone-file line (TXT strings are at most 255 characters each):");
    println!("  {name}. IN TXT ( {} )", zone_strings(value));
    println!();
    match args.algorithm {
        Algorithm::Rsa => {
            println!(
                "Then set these in the [dkim] section of veto.toml (add the section if it is missing):"
            );
            println!();
            println!("domain = {}", toml_string(signer.domain()));
            println!("selector = {}", toml_string(signer.selector()));
            println!("private_key_file = {path}");
        }
        Algorithm::Ed25519 => {
            println!(
                "Then set these in the [dkim] section of veto.toml, next to the RSA key's selector and private_key_file:"
            );
            println!();
            println!("ed25519_selector = {}", toml_string(signer.selector()));
            println!("ed25519_private_key_file = {path}");
        }
    }
    println!();
    println!("and check it with `veto check`.");
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` with mode 0600 (never replacing a file) and writes the
/// key; on any failure nothing is left behind.
fn write_new_private(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!(
                "{} already exists; veto never overwrites a key (a published DNS record may depend on it): \
                 choose another --out or --selector",
                path.display()
            )
        } else {
            anyhow!("cannot create {}: {e}", path.display())
        }
    })?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        bail!("cannot write {}: {e}", path.display());
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `"…" "…"`: the value in quoted strings of at most 255 characters.
fn zone_strings(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|chunk| format!("\"{}\"", String::from_utf8_lossy(chunk)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The signers `[dkim]` names, in signing order (the first key, then the
/// Ed25519 one). Errors name the key and the file.
pub fn signers(config: &Config) -> Result<Vec<Arc<Signer>>> {
    let d = &config.dkim;
    let domain = d
        .domain
        .clone()
        .unwrap_or_else(|| config.organisation.domain.clone());
    let mut signers = Vec::new();
    if let (Some(selector), Some(file)) = (&d.selector, &d.private_key_file) {
        signers.push(Arc::new(load(&domain, selector, file, "private_key_file")?));
    }
    if let (Some(selector), Some(file)) = (&d.ed25519_selector, &d.ed25519_private_key_file) {
        let signer = load(&domain, selector, file, "ed25519_private_key_file")?;
        if signer.algorithm() != KeyAlgorithm::Ed25519Sha256 {
            bail!(
                "[dkim] ed25519_private_key_file = {}: this is an RSA key; the second signature takes an Ed25519 key \
                 (veto dkim keygen --algorithm ed25519)",
                file.display()
            );
        }
        signers.push(Arc::new(signer));
    }
    Ok(signers)
}

fn load(domain: &str, selector: &str, file: &Path, key: &str) -> Result<Signer> {
    let pem = std::fs::read_to_string(file)
        .with_context(|| format!("[dkim] {key} = {}: cannot read it", file.display()))?;
    Signer::from_pem(&pem, domain, selector)
        .map_err(|e| anyhow!("[dkim] {key} = {}: {e}", file.display()))
}

/// What `veto check` prints about each signer.
pub fn describe(signer: &Signer) -> [String; 2] {
    let algorithm = match signer.algorithm() {
        KeyAlgorithm::RsaSha256 => "rsa-sha256",
        KeyAlgorithm::Ed25519Sha256 => "ed25519-sha256",
    };
    [
        format!(
            "dkim: {algorithm} signature as {} with selector {}",
            signer.domain(),
            signer.selector()
        ),
        format!(
            "dkim: publish TXT {} \"{}\"",
            signer.dns_name(),
            signer.dns_record()
        ),
    ]
}
