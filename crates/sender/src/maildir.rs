//! The maildir transport: each message a file in `new/`, written to `tmp/`
//! first and renamed, synced before it counts as handed off.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use veto_store::Admitted;

#[derive(Debug, Clone)]
pub struct Maildir {
    dir: PathBuf,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Maildir {
    /// Opens (creating) the maildir at `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Maildir> {
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Maildir {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one message for one admitted recipient; returns its file.
    pub fn deliver(&self, to: &Admitted, message: &[u8]) -> std::io::Result<PathBuf> {
        let now = jiff::Timestamp::now();
        let name = format!(
            "{}.M{}P{}Q{}.veto",
            now.as_second(),
            now.subsec_microsecond(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = self.dir.join("tmp").join(&name);
        let new = self.dir.join("new").join(&name);
        let mut f = std::fs::File::create(&tmp)?;
        // What an MDA records: who this copy was for.
        write!(f, "Delivered-To: {}\r\n", to.to().as_str())?;
        f.write_all(message)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &new)?;
        std::fs::File::open(self.dir.join("new"))?.sync_all()?;
        Ok(new)
    }
}
