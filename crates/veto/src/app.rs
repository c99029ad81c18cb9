//! What every command needs: the configuration, the store, the policy settings.

use anyhow::{Context, Result};
use veto_core::{JurisdictionSet, PolicySettings, PurchaseAfterOptOut};
use veto_store::Store;

use crate::config::{self, Config};

pub struct App {
    pub config: Config,
    pub store: Store,
}

impl App {
    /// Loads the configuration (every problem at once) and opens the store.
    pub async fn open(explicit: Option<&std::path::Path>) -> Result<App> {
        let config = load_config(explicit)?;
        let store = open_store(&config).await?;
        Ok(App { config, store })
    }

    pub fn policy(&self) -> PolicySettings {
        policy_settings(&self.config)
    }
}

pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config> {
    let loaded = config::load(explicit)?;
    // Unknown keys may be typos that change what veto does: say so every
    // time. A missing postal address is advice for `veto check` to give.
    for w in loaded
        .warnings
        .iter()
        .filter(|w| !w.starts_with("[organisation] postal_address"))
    {
        eprintln!("warning: {w}");
    }
    Ok(loaded.config)
}

pub async fn open_store(config: &Config) -> Result<Store> {
    let store = match config.store.database_path() {
        Some(path) => Store::open_sqlite(&path)
            .await
            .with_context(|| format!("cannot open the SQLite store {}", path.display()))?,
        None => Store::open(config.store.url.expose(), &config.store.data_dir)
            .await
            .context("cannot open the PostgreSQL store named by [store] url")?,
    };
    Ok(store)
}

pub fn policy_settings(config: &Config) -> PolicySettings {
    // The configuration has validated each name already.
    let default_jurisdictions =
        JurisdictionSet::parse_list(&config.policy.default_jurisdictions.join("|"))
            .unwrap_or_default();
    PolicySettings {
        default_jurisdictions,
        purchase_after_opt_out: match config.policy.purchase_after_opt_out {
            config::PurchaseAfterOptOut::StaysOptedOut => PurchaseAfterOptOut::StaysOptedOut,
            config::PurchaseAfterOptOut::NewBasis => PurchaseAfterOptOut::NewBasis,
        },
        charity: config.policy.charity,
    }
}
