//! The gateway's STARTTLS certificate: the one `[gateway] tls_cert_file`
//! and `tls_key_file` name, or else a self-signed one that `veto serve`
//! makes once in `data_dir/tls/`, so STARTTLS always works.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use veto_gateway::{TlsConfig, TlsError};

use crate::config::Config;

/// The self-signed pair's files: `data_dir/tls/gateway.{crt,key}`.
pub fn self_signed_paths(config: &Config) -> (PathBuf, PathBuf) {
    let dir = config.store.data_dir.join("tls");
    (dir.join("gateway.crt"), dir.join("gateway.key"))
}

/// The certificate for STARTTLS; the self-signed one is made first when
/// there is none yet (and `veto serve` logs so).
pub fn gateway_tls(config: &Config) -> Result<TlsConfig> {
    let g = &config.gateway;
    if let (Some(cert), Some(key)) = (&g.tls_cert_file, &g.tls_key_file) {
        return load_configured(cert, key);
    }
    let (cert, key) = self_signed_paths(config);
    if !(cert.exists() && key.exists()) {
        make_self_signed(&config.organisation.domain, &cert, &key)?;
        tracing::info!(
            certificate = %cert.display(),
            domain = %config.organisation.domain,
            "made a self-signed certificate for STARTTLS; clients that check certificates will not \
             trust it: set [gateway] tls_cert_file and tls_key_file to use your own"
        );
    } else {
        tracing::info!(
            certificate = %cert.display(),
            "STARTTLS uses the self-signed certificate (set [gateway] tls_cert_file and tls_key_file to use your own)"
        );
    }
    load_self_signed(&cert, &key)
}

/// What `veto check` says about the certificate; it makes nothing.
pub fn describe(config: &Config) -> Result<String> {
    let g = &config.gateway;
    if let (Some(cert), Some(key)) = (&g.tls_cert_file, &g.tls_key_file) {
        load_configured(cert, key)?;
        return Ok(format!(
            "tls: STARTTLS with {} ([gateway] tls_cert_file)",
            cert.display()
        ));
    }
    let (cert, key) = self_signed_paths(config);
    if cert.exists() && key.exists() {
        load_self_signed(&cert, &key)?;
        Ok(format!(
            "tls: STARTTLS with the self-signed certificate {} (set [gateway] tls_cert_file and tls_key_file to use your own)",
            cert.display()
        ))
    } else {
        Ok(format!(
            "tls: veto serve will make a self-signed certificate for {} in {}",
            config.organisation.domain,
            cert.parent().unwrap_or(&cert).display()
        ))
    }
}

fn load_configured(cert: &Path, key: &Path) -> Result<TlsConfig> {
    let cert_pem = read(cert, "[gateway] tls_cert_file")?;
    let key_pem = read(key, "[gateway] tls_key_file")?;
    TlsConfig::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        TlsError::NoCertificate | TlsError::Certificate(_) => {
            anyhow!("[gateway] tls_cert_file = {}: {e}", cert.display())
        }
        TlsError::NoKey | TlsError::Key(_) => {
            anyhow!("[gateway] tls_key_file = {}: {e}", key.display())
        }
        e => anyhow!(
            "[gateway] tls_cert_file = {} and tls_key_file = {}: {e}",
            cert.display(),
            key.display()
        ),
    })
}

fn load_self_signed(cert: &Path, key: &Path) -> Result<TlsConfig> {
    let what = format!("the self-signed certificate {}", cert.display());
    let cert_pem = read(cert, &what)?;
    let key_pem = read(key, &format!("its key {}", key.display()))?;
    TlsConfig::from_pem(&cert_pem, &key_pem).with_context(|| {
        format!(
            "{what} cannot be used; delete it and {} to have veto serve make a new pair",
            key.display()
        )
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        if what.starts_with('[') {
            format!("{what} = {}: cannot read it", path.display())
        } else {
            format!("cannot read {what}")
        }
    })
}

/// Writes a new pair, the key readable by its owner only. Each file is
/// written aside and renamed into place, so no half-written file is ever
/// read; a lone file left by a crash is replaced.
fn make_self_signed(domain: &str, cert: &Path, key: &Path) -> Result<()> {
    let dir = cert.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    let pair = veto_gateway::self_signed(domain)?;
    write_replacing(key, pair.key_pem.as_bytes(), 0o600)?;
    write_replacing(cert, pair.cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

fn write_replacing(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".new");
    let aside = PathBuf::from(aside);
    let _ = std::fs::remove_file(&aside);
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&aside)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&aside);
        anyhow!("cannot write {}: {e}", path.display())
    })
}
