//! schemathesis (PyPI) against a real `veto serve`: `.ci/schemathesis.sh`
//! fuzzes every operation in `/api/v1/openapi.json` with admin, DPO and
//! service-sender keys and fails on any 5xx or any response that does not
//! match the description. Runs when `VETO_TEST_SCHEMATHESIS=1` is set (and
//! then fails if schemathesis is missing); skipped otherwise.

use std::path::Path;
use std::process::Command;

#[test]
fn the_api_matches_its_openapi_description_under_schemathesis() {
    if std::env::var("VETO_TEST_SCHEMATHESIS").ok().as_deref() != Some("1") {
        eprintln!("skipped: schemathesis run (set VETO_TEST_SCHEMATHESIS=1 to run it)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/schemathesis.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_veto"))
        .status()
        .expect("run .ci/schemathesis.sh");
    assert!(
        status.success(),
        "schemathesis found failures (or could not run: is it installed? python3 -m pip install schemathesis); see the output above"
    );
}
