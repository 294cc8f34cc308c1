//! The fail-closed table `ip shoal_crypt` (thin): read back its tag, replace it whole in one
//! `nft -f` transaction. Its rules are written by [`super::plan::nft_script`].

use std::process::Command;

use super::plan::{nft_script, FailClosed, TABLE};
use super::CryptError;

/// Whether the table is there and carries `want`'s tag (then nothing needs doing).
pub fn current(want: &FailClosed) -> Result<bool, CryptError> {
    let exists = crate::lb::nft::table_exists(TABLE)
        .map_err(|e| CryptError::Unavailable(format!("nftables (needed to keep encrypted networks off the underlay): {e}")))?;
    if !exists {
        return Ok(want.is_empty());
    }
    if want.is_empty() {
        return Ok(false);
    }
    let out = Command::new(crate::lb::nft::NFT)
        .args(["-j", "list", "table", "ip", TABLE])
        .output()
        .map_err(|e| CryptError::Unavailable(format!("run nft: {e}")))?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(CryptError::FailClosedTable { what: format!("read table ip {TABLE}"), message });
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| CryptError::FailClosedTable {
        what: format!("read table ip {TABLE}"),
        message: format!("nft -j printed no JSON: {e}"),
    })?;
    let tag = want.tag();
    Ok(json["nftables"].as_array().into_iter().flatten().any(|i| i["rule"]["comment"] == tag.as_str()))
}

pub fn apply(want: &FailClosed) -> Result<(), CryptError> {
    let what = if want.is_empty() { format!("remove table ip {TABLE}") } else { format!("table ip {TABLE}: {}", want.tag()) };
    crate::lb::nft::run_batch(&nft_script(want), &what)
        .map_err(|e| CryptError::FailClosedTable { what: format!("write table ip {TABLE}"), message: e.to_string() })
}
